"""beyond.py: the seven norms against the batch size and BN over slices, read from the guide's results files."""
from dataclasses import replace

from lab import beyond, guide
from plumbing.system import save_json


def record(config, seed, test_acc):
    run = {"variant": "X", "config": {**vars(replace(config, seed=seed)), "data_dir": None}, "fingerprint": {"cpu": "A"},
           "epochs": [{"epoch": 3, "test_acc": test_acc, "seconds": 1.0}]}
    return {**run, "diverged": {"epoch": 2}} if test_acc is None else run


def fake_guide(folder):
    (folder / "guide").mkdir()
    for point in ("batch_8", "batch_64"):
        runs = [record(c, seed, None if (c.norm, seed) == ("frn", 1) else 99.0 + 0.1 * seed)
                for seed in (0, 1) for c in guide.POINTS[point]]
        save_json({"summary": None, "runs": runs}, folder / "guide" / f"{point}.json")


def test_the_table_has_each_norm_and_slice_at_each_batch_size(tmp_path):
    assert beyond.beyond_section(tmp_path).startswith("Not run yet")
    fake_guide(tmp_path)
    lines = beyond.beyond_section(tmp_path).splitlines()
    assert lines[0] == "| norm | batch 2 | batch 8 | batch 64 | batch 512 |"
    assert lines[2] == "| BN |  | 99.05 ± 0.07 (2) | 99.05 ± 0.07 (2) |  |"
    assert "| FRN |  | 99.00 (1), 1 diverged | 99.00 (1), 1 diverged |  |" in lines
    assert "| BN over slices of 2 |  |  | 99.05 ± 0.07 (2) |  |" in lines  # slices only at batch 64 here
    assert "(36 runs, seeds 0, 1, on " in lines[-1]


def test_the_figure_draws_the_norms_and_the_slices(tmp_path):
    fake_guide(tmp_path)
    [path] = beyond.redraw(tmp_path, tmp_path / "images")
    assert path.name == "beyond.png" and path.stat().st_size > 10_000
    fig = beyond.plot_beyond(beyond.final_accuracies(tmp_path))
    norms_ax, slices_ax = fig.axes
    assert [t.get_text() for t in norms_ax.get_legend().get_texts()] == [
        "BN", "GN", "LN", "GN+WS", "BRN", "FRN", "EvoNorm-S0"]
    assert [t.get_text() for t in slices_ax.get_legend().get_texts()] == ["BN, batch 64"]  # no batch 512 runs here
    [mean] = [line for line in slices_ax.get_lines() if line.get_label() == "BN, batch 64"]
    assert list(mean.get_xdata()) == [2, 4, 8, 16, 64]  # each slice, then plain BN (one slice of 64)


def test_each_papers_claim_is_asked_of_its_pair_here_and_decided_only_at_six_seeds(tmp_path):
    (tmp_path / "guide").mkdir()
    # FRN 0.1 points ahead of BN at batch 8 in every seed but a wobble; at batch 64 BN ahead, seeds 0-5
    wobble = [0.0, 0.02, -0.01, 0.01, 0.0, -0.02]
    accuracy = {"bn": 99.0, "frn": 99.1, "gn": 99.05}
    for point, seeds in (("batch_8", range(6)), ("batch_64", range(3))):
        runs = [record(c, seed, accuracy.get(c.norm, 98.0) + wobble[seed] * (c.norm == "frn"))
                for seed in seeds for c in guide.POINTS[point] if not c.bn_batch]
        save_json({"summary": None, "runs": runs}, tmp_path / "guide" / f"{point}.json")
    rows = {line.split(" | ")[3]: line for line in beyond.papers_section(tmp_path).splitlines()[2:]}
    assert len(rows) == len(beyond.CLAIMS) == 10
    frn = rows["FRN at batch 8 − BN at batch 8"].split(" | ")
    assert frn[4:6] == ["6", "+0.10"] and frn[-1] == "**same direction**, separated |"
    assert rows["BRN at batch 8 − BN at batch 8"].endswith("| **the opposite**, separated |")  # 98.0 against 99.0
    assert rows["BN at batch 64 − FRN at batch 64"].endswith("| none yet: 3 of 6 seeds |")
    assert rows["GN at batch 2 − BN at batch 2"].endswith("| 0 | | | no interval from 0 seeds |")
