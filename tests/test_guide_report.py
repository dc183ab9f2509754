"""guide_report.py: the protocol's paired intervals per guide point, from the records of results/guide/."""
from dataclasses import replace

from lab import guide, guide_report
from plumbing.config import Config
from plumbing.system import save_json
from plumbing.stats import paired


def record(config, seed, test_acc, machine="A", diverged=False):
    run = {"variant": "X", "config": {**vars(replace(config, seed=seed)), "data_dir": None},
           "fingerprint": {"cpu": machine},
           "epochs": [{"epoch": 3, "test_acc": test_acc, "val_acc": test_acc, "seconds": 1.0}]}
    return {**run, "diverged": {"epoch": 2}} if diverged else run


def test_only_seeds_finished_on_one_machine_pair():
    a, b = Config(norm="gn"), Config(norm="bn")
    runs_a = [record(a, 0, 99.0), record(a, 1, 99.1, machine="B"), record(a, 2, 99.2, diverged=True),
              record(a, 3, 99.3)]
    runs_b = [record(b, 0, 98.0), record(b, 1, 98.1), record(b, 2, 98.2), record(b, 4, 98.4)]
    pairs, left_out = guide_report.paired_seeds(guide_report.by_seed(runs_a), guide_report.by_seed(runs_b))
    assert pairs == {0: (99.0, 98.0)}
    assert left_out == ["seed 1 on two machines", "seed 2 diverged"]


def test_a_verdict_needs_six_paired_seeds_and_the_family_adjusted_interval():
    a, b = Config(norm="gn"), Config(norm="bn")
    gains = [0.10, 0.12, 0.08, 0.11, 0.09, 0.10]
    runs = {guide.variant_name(a): [record(a, s, 99.0 + g) for s, g in enumerate(gains)],
            guide.variant_name(b): [record(b, s, 99.0) for s in range(6)]}
    row = guide_report.comparison_row(a, b, runs, family=6)
    interval = paired([99.0 + g for g in gains], [99.0] * 6, family=6)
    assert f"{interval['low']:+.2f} to {interval['high']:+.2f}" in row and "**separated**" in row
    few = {name: group[:3] for name, group in runs.items()}
    assert "none yet: 3 of 6 seeds" in guide_report.comparison_row(a, b, few, family=6)
    spread = [0.3, -0.2, 0.1, -0.3, 0.2, 0]
    noisy = {**runs, guide.variant_name(a): [record(a, s, 99.0 + g) for s, g in enumerate(spread)]}
    assert "not told apart (would detect" in guide_report.comparison_row(a, b, noisy, family=6)


def test_each_point_reports_its_comparisons_in_families():
    families = {point: guide_report.families(point, configs) for point, configs in guide.POINTS.items()}
    named = lambda fams: [[f"{guide_report.label(x)} - {guide_report.label(y)}" for x, y in pairs] for _, pairs in fams]
    assert named(families["batch_2"])[0][:2] == ["BN - GN", "LN - GN"] and len(named(families["batch_2"])[0]) == 6
    assert named(families["batch_64"])[1] == [f"BN over slices of {k} - BN" for k in (2, 4, 8, 16)]
    assert named(families["recipe"]) == [["no norm - GN", "GN(2) - GN", "IN - GN", "BN - GN"]]
    assert [title for title, _ in families["adam_lr"]] == ["Adam 0.0003", "Adam 0.3"]
    assert "BN - BN at Adam 0.05" in named(families["batch_512_equal_steps"])[0]


def test_the_sections_read_a_guide_folder(tmp_path):
    (tmp_path / "guide").mkdir()
    configs = guide.POINTS["recipe"]
    save_json({"summary": None, "runs": [record(c, s, 99.0 + 0.1 * s * (c.norm == "none")) for s in range(2)
                                         for c in configs]},
              tmp_path / "guide" / "recipe.json")
    index = guide_report.guide_points_section(tmp_path)
    assert "- **recipe**: 10 runs, seeds 0, 1, on an unrecorded CPU; the tables: [GN family](gn_family.md#recipe)." \
        in index and "- **batch_2**: no runs yet." in index
    text = guide_report.SECTIONS["GUIDE_RECIPE"](tmp_path)  # on the GN family's page
    assert text.startswith("#### recipe\n") and guide_report.SECTIONS["GUIDE_BATCH_2"](tmp_path).startswith("Not run")
    interval = paired([99.0, 99.1], [99.0, 99.0], family=4)  # four comparisons with GN(4) at the recipe
    assert (f"| no norm − GN | 2 | 99.05 | 99.00 | +0.05 | {interval['low']:+.2f} to {interval['high']:+.2f} | "
            "none yet: 2 of 6 seeds |") in text
    chosen = guide_report.chosen_lr_section(tmp_path)
    assert "| BN | " in chosen and "not yet" in chosen


def test_the_recipes_models_under_shifts_pair_by_the_machine_they_trained_on(tmp_path):
    (tmp_path / "guide").mkdir()
    gn, none = (c for c in guide.POINTS["recipe"] if c.norm in ("gn", "none") and c.gn_groups == 4)
    save_json({"summary": None, "runs": [record(c, s, 99.0, machine="B" if (c.norm, s) == ("none", 2) else "A")
                                         for s in range(3) for c in (gn, none)]}, tmp_path / "guide" / "recipe.json")
    rows = [{"variant": c.norm, "seed": s, "shift": shift, "severity": severity, "bn_stats": None,
             "test_acc": 90.0 + s + (c.norm == "gn") * severity, "test_loss": 0.1}
            for c in (gn, none) for s in range(3) for shift, severity in (("clean", 0), ("blur", 1), ("blur", 3))]
    save_json({"summary": None, "results": rows}, tmp_path / "guide" / "shift.json")
    lines = guide_report.guide_shift_section(tmp_path).splitlines()
    assert [line.split(" | ")[0] for line in lines[2:4]] == ["| clean 0: no norm − GN", "| blur 3: no norm − GN"]
    assert lines[3].startswith("| blur 3: no norm − GN | 2 | 90.50 | 93.50 | -3.00 |")  # seed 2: two machines
    assert lines[3].endswith("(seed 2 on two machines) |") and "1 comparisons per condition" in lines[-1]


def test_the_machine_effect_sets_the_same_runs_on_two_machines_side_by_side(tmp_path):
    (tmp_path / "guide").mkdir()
    assert guide_report.machines_section(tmp_path) == "No guide runs yet."
    config = guide.MACHINE_EFFECT
    save_json({"summary": None, "runs": [record(config, s, 99.0 + 0.01 * s) for s in range(6)]},
              tmp_path / "guide" / "machine_a.json")
    assert "no run has a twin on another machine yet" in guide_report.machines_section(tmp_path)
    shifts = [0.10, 0.12, 0.08, 0.11, 0.09, 0.10]
    save_json({"summary": None,
               "runs": [record(config, s, 99.0 + 0.01 * s + d, machine="B") for s, d in enumerate(shifts)]},
              tmp_path / "guide" / "machine_b.json")
    bn = replace(Config(norm="bn"), epochs=3)  # a seed moved aside (machine A) and retrained on machine B
    save_json({"summary": None, "runs": [record(bn, 0, 98.0)]}, tmp_path / "guide" / "batch_64_unpaired.json")
    save_json({"summary": None, "runs": [record(bn, 0, 98.3, machine="B")]}, tmp_path / "guide" / "batch_64.json")
    a, b = (f"an unrecorded CPU ({guide.fingerprint_key({'cpu': m})})" for m in "AB")
    found = guide_report.twins(tmp_path)
    [(first, second)] = found  # one pair of machines, in a fixed order
    assert {first, second} == {a, b} and len(found[(first, second)]) == 7  # six seeds, and the seed set aside
    on_b = [99.0 + 0.01 * s + d for s, d in enumerate(shifts)] + [98.3]
    on_a = [99.0 + 0.01 * s for s in range(6)] + [98.0]
    interval = paired(on_b, on_a) if second == b else paired(on_a, on_b)
    line = guide_report.machines_section(tmp_path).splitlines()[2]
    assert line.startswith(f"| {second} − {first} | 7: bn_e3_seed0, gn_e3_seed0, ") and "seed5 | 0 |" in line
    assert f"{interval['low']:+.2f} to {interval['high']:+.2f}" in line


def test_twins_come_from_any_results_file_and_equal_runs_are_said_to_be_equal(tmp_path):
    (tmp_path / "guide").mkdir()
    gn, none = (c for c in guide.POINTS["recipe"] if c.norm in ("gn", "none") and c.gn_groups == 4)
    save_json({"summary": None, "runs": [record(gn, 0, 99.4), record(none, 0, 99.1)]},
              tmp_path / "guide" / "recipe.json")
    older = [record(gn, 0, 99.4, machine="B"), {**record(none, 0, 99.1, machine="B"), "fingerprint": None}]
    save_json({"summary": None, "runs": older}, tmp_path / "study_other.json")  # the second: no fingerprint
    save_json({"summary": None, "results": []}, tmp_path / "shift.json")  # a file without runs is passed over
    [(first, second)] = guide_report.twins(tmp_path)
    assert list(guide_report.twins(tmp_path)[(first, second)]) == ["gn_seed0"]
    line = guide_report.machines_section(tmp_path).splitlines()[2]
    assert line.endswith("| 1: gn_seed0 | 1 | 99.40 | 99.40 | +0.00 | | the same numbers in every epoch |")
    save_json({"summary": None, "runs": [record(gn, 0, 99.3, machine="B")]}, tmp_path / "study_other.json")
    line = guide_report.machines_section(tmp_path).splitlines()[2]
    assert line.endswith("| 1: gn_seed0 | 0 | 99.40 | 99.30 | -0.10 | | one run |") or \
        line.endswith("| 1: gn_seed0 | 0 | 99.30 | 99.40 | +0.10 | | one run |")


def test_older_runs_without_a_fingerprint_are_set_beside_their_fingerprinted_twins(tmp_path):
    (tmp_path / "guide").mkdir()
    gn, bn = (c for c in guide.POINTS["batch_64"] if c.norm in ("gn", "bn") and not c.bn_batch)
    save_json({"summary": None, "runs": [record(c, s, 99.0 + s) for s in range(3) for c in (gn, bn)]},
              tmp_path / "guide" / "batch_64.json")
    unrecorded = lambda run: {**run, "fingerprint": None, "cpu": "Intel"}  # noqa: E731
    save_json({"summary": None, "runs": [unrecorded(record(gn, s, 99.0 + s)) for s in range(3)]},
              tmp_path / "same_machine.json")
    moved = [unrecorded(record(bn, s, 99.0 + s + d)) for s, d in enumerate((0.1, -0.3, 0.5))]
    save_json({"summary": None, "runs": moved}, tmp_path / "other_machine.json")
    lines = guide_report.older_runs_table(tmp_path)
    other, same = lines[-2:]  # in file order
    assert same.startswith("| `same_machine.json` (Intel, torch ?) | an unrecorded CPU (") and same.endswith(
        "| 3 | 3 | +0.00 | | |")
    interval = paired([99.1, 99.7, 101.5], [99.0, 100.0, 101.0])
    assert other.endswith(f"| 3 | 0 | +0.10 | {interval['low']:+.2f} to {interval['high']:+.2f} | 0.40, +0.50 |")


def test_the_batch_64_point_is_one_line_both_pages_quote(tmp_path):
    (tmp_path / "guide").mkdir()
    assert guide_report.batch_64_section(tmp_path).startswith("Not run yet")
    runs = [record(c, s, 99.0 + 0.1 * s, diverged=(c.norm, s) == ("ln", 1))
            for s in range(2) for c in guide.POINTS["batch_64"]]
    save_json({"summary": None, "runs": runs}, tmp_path / "guide" / "batch_64.json")
    line = guide_report.batch_64_section(tmp_path)
    assert "seeds 0, 1, each seed's norms on an unrecorded CPU" in line
    assert "BN 99.05 ± 0.07% (2), GN 99.05 ± 0.07% (2), LN 99.00 ± 0.00% (1), mean ± std" in line  # LN diverged once
