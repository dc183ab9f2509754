"""lr_range.py: BN, GN and LN over a range of peak learning rates; diverged runs are recorded, not dropped."""
import json

import matplotlib.image as mpimg
import pytest

from lab import lr_range
from plumbing.config import Config, run_name
from plumbing.config import COMPARED as NORMS  # what lr_range.py runs by default


def test_smoke_lr_range_records_diverged_runs_and_draws_the_figure(tiny_mnist, tmp_path, capsys):
    code = lr_range.main(["--lrs", "0.01", "1e30", "--seeds", "0", "--epochs", "1", "--norms", "bn", "gn", "ln",
                          "--workers", "1", "--device", "cpu", "--data-dir", str(tiny_mnist),
                          "--out", str(tmp_path / "runs"), "--results", str(tmp_path / "lr_range.json"),
                          "--images", str(tmp_path / "images")])
    out = capsys.readouterr().out
    assert code == 0
    results = json.loads((tmp_path / "lr_range.json").read_text())
    runs = results["runs"]
    assert [(r["config"]["lr"], r["config"]["norm"]) for r in runs] == [(lr, n) for lr in (0.01, 1e30) for n in NORMS]
    assert all(r["config"]["optimizer"] == "adam" and r["config"]["l1"] == 0 for r in runs)
    for run in runs:
        if run["config"]["lr"] == 0.01:
            assert "diverged" not in run and len(run["epochs"]) == 1
        else:  # recorded with where it stopped, not dropped
            assert run["diverged"]["epoch"] == 1 and run["diverged"]["step"] >= 1 and run["epochs"] == []
    summary = {(e["norm"], e["lr"]): e for e in results["summary"]}
    assert len(summary) == 6
    for norm in NORMS:
        good, bad = summary[(norm, 0.01)], summary[(norm, 1e30)]
        assert good["diverged"] == [] and good["usable"] and good["test_acc"]["mean"] > 50
        assert [d["seed"] for d in bad["diverged"]] == [0] and bad["diverged"][0]["epoch"] == 1
        assert not bad["usable"] and "test_acc" not in bad
        assert (tmp_path / "runs" / run_name(Config(norm=norm, lr=1e30, epochs=1))).is_dir()
    assert mpimg.imread(tmp_path / "images" / "lr_range.png").shape[1::-1] == (840, 600)
    assert "(1 of 1 diverged)" in out and "**0.01-0.01**" in out


def entry(norm, lr, acc=None, diverged=(), optimizer="adam", seeds=(0, 1, 2)):
    e = {"optimizer": optimizer, "norm": norm, "lr": lr, "epochs": 3, "seeds": list(seeds),
         "diverged": [{"seed": s, "epoch": 2, "step": 10} for s in diverged]}
    if acc is not None:
        e["test_acc"] = {"mean": acc, "min": acc - 0.1, "max": acc + 0.1, "std": 0.05}
    return e


def hand_made_summary():
    summary = [
        entry("bn", 0.001, 99.0),   # error 1.0
        entry("bn", 0.01, 99.2),    # error 0.8: the best; usable up to 1.5 x 0.8 = 1.2
        entry("bn", 0.1, 98.85),    # error 1.15
        entry("bn", 0.3, 98.5),     # error 1.5: too far from the best
        entry("bn", 1.0, 99.3, diverged=[2]),  # two seeds fine, one diverged: not usable
        entry("gn", 0.01, diverged=[0, 1, 2]),
        entry("gn", 0.01, 99.0, optimizer="sgd"),
    ]
    for e in summary:
        e["usable"] = lr_range.is_usable(e, summary)
    return summary


def test_is_usable():
    summary = hand_made_summary()
    assert [e["usable"] for e in summary] == [True, True, True, False, False, False, True]


def test_usable_range():
    summary = hand_made_summary()
    assert lr_range.usable_range(summary, "adam", "bn") == "0.001-0.1"
    assert lr_range.usable_range(summary, "adam", "gn") == "-"
    assert lr_range.usable_range(summary, "sgd", "gn") == "0.01-0.01"
    assert lr_range.usable_range(summary, "sgd", "bn") == "-"


def test_summarize_marks_diverged_seeds_and_usability():
    def run(norm, lr, seed, acc=None):
        record = {"config": {"norm": norm, "lr": lr, "seed": seed, "epochs": 3, "optimizer": "adam"}, "epochs": []}
        if acc is None:
            record["diverged"] = {"epoch": 1, "step": 7}
        else:
            record["epochs"] = [{"test_acc": acc}]
        return record

    summary = lr_range.summarize([run("gn", 0.3, 0, 98.0), run("gn", 0.3, 1), run("gn", 0.01, 0, 99.0),
                                  run("gn", 0.01, 1, 99.2), run("bn", 0.01, 0, 99.1)])
    assert [(e["norm"], e["lr"]) for e in summary] == [("bn", 0.01), ("gn", 0.01), ("gn", 0.3)]
    high = summary[2]
    assert high["seeds"] == [0, 1] and high["diverged"] == [{"seed": 1, "epoch": 1, "step": 7}]
    assert high["test_acc"]["mean"] == 98.0 and not high["usable"]  # from the seed that finished
    assert summary[1]["test_acc"]["mean"] == pytest.approx(99.1) and summary[1]["usable"]


def test_configs_and_table():
    configs = lr_range.lr_range_configs(Config(l1=1e-4, epochs=3), "sgd", seeds=(0,), norms=("bn", "ln"))
    assert [(c.lr, c.norm) for c in configs] == [(lr, n) for lr in lr_range.LRS["sgd"] for n in ("bn", "ln")]
    assert all(c.optimizer == "sgd" and c.l1 == 0 for c in configs)
    lines = lr_range.lr_range_table(hand_made_summary()).splitlines()
    assert lines[0] == "| optimizer | peak LR | BN test acc % | GN test acc % |"
    assert "| adam | 1 | 99.30 ± 0.05 (1 of 3 diverged) | - |" in lines
    assert "| adam | 0.01 | 99.20 ± 0.05 ✓ | (3 of 3 diverged) |" in lines
    assert lines[-2:] == ["| adam | **usable range** | **0.001-0.1** | **-** |",
                          "| sgd | **usable range** | **-** | **0.01-0.01** |"]


@pytest.mark.parametrize("args", [["--epochs", "0"], ["--lrs", "0"], ["--workers", "0"], ["--optimizer", "rmsprop"]])
def test_bad_flags_are_refused(args, tmp_path):
    with pytest.raises(SystemExit) as refused:
        lr_range.main([*args, "--results", str(tmp_path / "r.json")])
    assert refused.value.code == 2 and not (tmp_path / "r.json").exists()


def test_best_lrs_skip_lrs_with_a_diverged_seed():
    summary = hand_made_summary()
    assert lr_range.best_lrs(summary, "adam") == {"bn": 0.01}  # 1.0 has the higher mean, but a seed diverged there
    assert lr_range.best_lrs(summary, "sgd") == {"gn": 0.01}


# (optimizer, norm, lr) -> three seeds' final test accuracy; best with Adam: BN at 0.1, GN and LN at 0.01
ACCS = {("adam", "bn", 0.01): [99.0, 99.1, 99.2], ("adam", "bn", 0.1): [99.3, 99.31, 99.29],
        ("adam", "gn", 0.01): [99.1, 99.0, 99.2], ("adam", "gn", 0.1): [98.5, 98.52, 98.48],
        ("adam", "ln", 0.01): [99.05, 99.2, 99.1], ("adam", "ln", 0.1): [98.0, 98.9, 98.5],
        ("sgd", "bn", 0.1): [99.2, 99.25, 99.3], ("sgd", "gn", 0.1): [99.0, 99.3, 99.1],
        ("sgd", "ln", 0.1): [98.9, 99.0, 98.95]}


def fabricated_runs():
    """ACCS as recorded runs, and one diverged run that no comparison may count."""
    runs = [{"config": {"norm": norm, "lr": lr, "seed": seed, "epochs": 3, "optimizer": optimizer},
             "epochs": [{"test_acc": acc}]}
            for (optimizer, norm, lr), accs in ACCS.items() for seed, acc in enumerate(accs)]
    return runs + [{"config": {"norm": "gn", "lr": 0.1, "seed": 3, "epochs": 3, "optimizer": "sgd"}, "epochs": [],
                    "diverged": {"epoch": 1, "step": 3}}]


def test_per_seed_keeps_the_finished_seeds_of_each_point():
    assert lr_range.per_seed(fabricated_runs()) == ACCS


def test_comparisons_name_each_family():
    runs = fabricated_runs()
    found = lr_range.comparisons(lr_range.per_seed(runs), lr_range.summarize(runs))
    assert [(title, family, len(pairs)) for title, pairs, family in found] == [
        ("Adam, the norms at each peak LR, each LR adjusted on its own", 3, 6),
        ("Adam, each norm at its best LR", 3, 3),
        ("Adam at 0.1, each norm against its own best LR", 2, 2),  # BN is at its best there: no row
        ("SGD, the norms at each peak LR, each LR adjusted on its own", 3, 3),
        ("SGD, each norm at its best LR", 1, 1),  # GN's one SGD LR had a seed diverge: GN has no best
        ("each norm's best LR, SGD against Adam", 2, 2)]  # SGD's one LR is every best: no table against it
    assert found[1][1] == [(("adam", "bn", 0.1), ("adam", "gn", 0.01)), (("adam", "bn", 0.1), ("adam", "ln", 0.01)),
                           (("adam", "gn", 0.01), ("adam", "ln", 0.01))]
    assert found[2][1] == [(("adam", "gn", 0.1), ("adam", "gn", 0.01)), (("adam", "ln", 0.1), ("adam", "ln", 0.01))]


def test_welch_section_adjusts_each_table_over_its_family_and_follows_welch(tmp_path):
    from plumbing.stats import welch
    runs = fabricated_runs()
    (tmp_path / "lr_range.json").write_text(json.dumps({"runs": runs, "summary": lr_range.summarize(runs)}))
    tables = lr_range.lr_welch_section(tmp_path).split("\n\n")
    assert tables[0] == "*Adam, the norms at each peak LR, each LR adjusted on its own* (family: 3 comparisons):"
    assert "98.33% interval (Welch)" in tables[1] and "97.5% interval (Welch)" in tables[5]  # 3 per LR; 2 at the top
    rows = {row.split(" | ")[0][2:]: row for table in tables[1::2] for row in table.splitlines()[2:]}
    assert rows["BN at Adam 0.1 − GN at Adam 0.1"].endswith("| **separated** |")
    for name, a, b, family in [("LN at Adam 0.1 − LN at Adam 0.01", ("adam", "ln", 0.1), ("adam", "ln", 0.01), 2),
                               ("GN at SGD 0.1 − LN at SGD 0.1", ("sgd", "gn", 0.1), ("sgd", "ln", 0.1), 3)]:
        result = welch(ACCS[a], ACCS[b], alpha=0.05 / family)
        assert not result["separated"]
        assert rows[name].endswith(f"{result['low']:+.2f} to {result['high']:+.2f} | not told apart "
                                   f"(would detect {result['detectable']:.2f}) |")
    assert rows["GN at SGD 0.1 − LN at SGD 0.1"].split(" | ")[1] == "3 + 3"  # the diverged seed left out
