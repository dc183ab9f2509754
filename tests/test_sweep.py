"""sweep.py: the batch-size sweep, its equal-steps variant and the LR rule; runs, resumes, tables, the command."""
import json

import matplotlib.image as mpimg
import pytest

from lab import sweep
from plumbing.config import BATCH_SIZES, Config, run_name

SMOKE = ["--seeds", "0", "--epochs", "1", "--device", "cpu", "--workers", "1"]


def run_sweep(tiny_mnist, tmp_path, *extra):
    return sweep.main([*SMOKE, "--data-dir", str(tiny_mnist), "--out", str(tmp_path / "runs"),
                       "--results", str(tmp_path / "sweep.json"), "--images", str(tmp_path / "images"), *extra])


def test_smoke_sweep_writes_results_and_figure(tiny_mnist, tmp_path):
    assert run_sweep(tiny_mnist, tmp_path, "--batch-sizes", "8", "32") == 0
    results = json.loads((tmp_path / "sweep.json").read_text())
    assert [(r["config"]["norm"], r["config"]["batch_size"]) for r in results["runs"]] == [
        ("bn", 8), ("gn", 8), ("ln", 8), ("bn", 32), ("gn", 32), ("ln", 32)]
    assert all(r["config"]["l1"] == 0 and r["config"]["lr"] == sweep.peak_lr(r["config"]["batch_size"])
               for r in results["runs"])
    for run in results["runs"]:
        extras = {"test_acc_batch_stats", "test_acc_precise_stats"} <= set(run["epochs"][-1])
        assert extras == (run["config"]["norm"] == "bn")
    assert [(e["norm"], e["batch_size"]) for e in results["summary"]] == [
        ("bn", 8), ("bn", 32), ("gn", 8), ("gn", 32), ("ln", 8), ("ln", 32)]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == sorted(
        run_name(Config(norm=n, epochs=1, batch_size=b)) for n in ("bn", "gn", "ln") for b in (8, 32))
    assert mpimg.imread(tmp_path / "images" / "batch_size.png").shape[1::-1] == (1680, 660)


def test_half_finished_sweep_resumes_and_skips_recorded_runs(tiny_mnist, tmp_path, capsys, monkeypatch):
    # the figure is test_smoke_sweep's business: here only the runs and the results file count
    monkeypatch.setattr(sweep, "redraw_batch_size", lambda *args, **kwargs: "no figure")
    assert run_sweep(tiny_mnist, tmp_path, "--batch-sizes", "8") == 0  # 3 of the 6 runs below
    first = json.loads((tmp_path / "sweep.json").read_text())["runs"]
    assert len(first) == 3
    capsys.readouterr()
    assert run_sweep(tiny_mnist, tmp_path, "--batch-sizes", "8", "32") == 0
    out = capsys.readouterr().out
    assert "3 of 6 runs already in" in out and "3 to go" in out and out.count("done: ") == 3
    runs = json.loads((tmp_path / "sweep.json").read_text())["runs"]
    assert len(runs) == 6 and all(run in runs for run in first)  # recorded runs untouched
    assert len(list((tmp_path / "runs").iterdir())) == 6
    capsys.readouterr()
    assert run_sweep(tiny_mnist, tmp_path, "--batch-sizes", "32", "8") == 0
    assert "6 of 6 runs already in" in capsys.readouterr().out
    assert json.loads((tmp_path / "sweep.json").read_text())["runs"] == runs


def test_sweep_configs_are_seed_major_without_l1():
    configs = sweep.sweep_configs(Config(l1=1e-4, epochs=3), seeds=(0, 1), batch_sizes=(8, 64))
    assert [(c.seed, c.batch_size, c.norm) for c in configs] == [
        (s, b, n) for s in (0, 1) for b in (8, 64) for n in ("bn", "gn", "ln")]
    assert all(c.l1 == 0 and c.epochs == 3 and c.lr == sweep.peak_lr(c.batch_size) for c in configs)
    assert len(sweep.sweep_configs(Config())) == len(sweep.SEEDS) * len(BATCH_SIZES) * 3


def test_equal_steps_configs_train_large_batches_for_the_steps_of_batch_64():
    configs = sweep.equal_steps_configs(Config(epochs=3), seeds=(0,))
    assert sorted({(c.batch_size, c.epochs) for c in configs}) == [(128, 6), (256, 12), (512, 24)]
    assert all(c.epochs * 60_000 // c.batch_size == 3 * 60_000 // 64 for c in configs)  # the same steps
    assert all(c.lr == sweep.peak_lr(c.batch_size) and c.l1 == 0 for c in configs)


def test_lr_rules_agree_at_the_study_batch_size_and_are_capped():
    assert all(sweep.peak_lr(64, rule) == 0.01 for rule in sweep.LR_RULES)
    assert sweep.peak_lr(4, "sqrt") == pytest.approx(0.0025) and sweep.peak_lr(4, "linear") == pytest.approx(0.000625)
    assert sweep.peak_lr(4096, "linear") == sweep.LR_CAP


def test_selection_configs_and_summary_rank_the_rules():
    configs = sweep.selection_configs(Config(epochs=3))
    assert len(configs) == len(sweep.SELECTION_BATCH_SIZES) * 3 * len(sweep.LR_RULES)
    assert all(c.val_split == sweep.SELECTION_VAL_SPLIT and c.seed == 0 for c in configs)
    bonus = {"constant": 0.0, "sqrt": 0.5, "linear": 0.2}
    runs = [{"config": {"norm": c.norm, "batch_size": c.batch_size, "lr": c.lr},
             "epochs": [{"val_acc": 98.0 + bonus[rule] + (c.batch_size == 4)}]}
            for c, rule in zip(configs, [r for _ in range(len(configs) // 3) for r in sweep.LR_RULES])]
    summary = sweep.summarize_selection(runs)
    assert [s["rule"] for s in summary] == ["sqrt", "linear", "constant"]
    assert summary[0]["mean_val_acc"] == pytest.approx(99.0) and summary[0]["val_acc"]["gn/512"] == 98.5
    table = sweep.lr_rule_table(summary).splitlines()
    assert table[0] == "| LR rule | BN, batch 512 | GN, batch 512 | LN, batch 512 | BN, batch 4 | GN, batch 4 " \
                       "| LN, batch 4 | mean |"
    assert table[2] == "| sqrt | 98.50% | 98.50% | 98.50% | 99.50% | 99.50% | 99.50% | 99.00% |"


def test_own_lr_configs_give_each_norm_its_best_rule_and_skip_the_sweeps_own():
    selection = [{"rule": "constant", "val_acc": {"bn/512": 98.0, "gn/512": 97.0, "ln/512": 96.0}},
                 {"rule": "linear", "val_acc": {"bn/512": 98.7, "gn/512": 96.0, "ln/512": 96.5}}]
    assert sweep.best_rules(selection, 512) == {"bn": "linear", "gn": "constant", "ln": "linear"}
    configs = sweep.own_lr_configs(Config(epochs=3), selection)
    assert [(c.norm, c.batch_size, c.epochs, c.lr, c.seed) for c in configs] == [
        (norm, 512, 24, sweep.peak_lr(512, "linear"), seed) for seed in sweep.SEEDS for norm in ("bn", "ln")]
    with pytest.raises(ValueError, match="no BN at batch 256"):
        sweep.own_lr_configs(Config(epochs=3), selection, batch_sizes=(256,))


def test_own_lr_without_the_selection_file_says_what_to_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as refused:
        sweep.main(["--own-lr"])
    assert refused.value.code == 2 and "run `python -m lab.sweep --select-lr` first" in capsys.readouterr().err


def sweep_run(norm, batch_size, seed, acc, seconds=2.0, **extras):
    return {"config": {"norm": norm, "batch_size": batch_size, "lr": sweep.peak_lr(batch_size), "epochs": 3,
                       "seed": seed},
            "epochs": [{"test_acc": 90.0, "seconds": seconds}, {"test_acc": acc, "seconds": seconds, **extras}]}


def test_summary_and_table_of_a_sweep():
    runs = [sweep_run("gn", 8, 0, 99.0), sweep_run("gn", 8, 1, 99.2), sweep_run("bn", 8, 0, 98.0,
            test_acc_batch_stats=97.0, test_acc_precise_stats=98.5), sweep_run("bn", 512, 0, 99.1, seconds=1.0)]
    summary = sweep.summarize_sweep(runs)
    assert [(e["norm"], e["batch_size"]) for e in summary] == [("bn", 8), ("bn", 512), ("gn", 8)]
    gn = summary[2]
    assert gn["seeds"] == [0, 1] and gn["test_acc"]["mean"] == pytest.approx(99.1)
    assert gn["test_acc"]["min"] == 99.0 and gn["test_acc"]["max"] == 99.2 and gn["seconds_per_epoch"] == 2.0
    assert summary[0]["test_acc_batch_stats"]["mean"] == 97.0 and "test_acc_batch_stats" not in summary[1]
    table = sweep.batch_size_table(summary).splitlines()
    assert table[0] == ("| batch | epochs | peak LR | BN test acc % | GN test acc % | BN, batch stats "
                        "| BN, recomputed stats |")
    assert table[2] == "| 8 | 3 | 0.01 | 98.00 ± 0.00 | 99.10 ± 0.14 | 97.00 ± 0.00 | 98.50 ± 0.00 |"
    assert table[3] == "| 512 | 3 | 0.01 | 99.10 ± 0.00 | - | - | - |"


def test_help_lists_the_engine_flags(capsys):
    with pytest.raises(SystemExit) as done:
        sweep.main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "--workers" in out and "--address" in out and "--gpus-per-run" in out and "--equal-steps" in out


@pytest.mark.parametrize("args", [["--epochs", "0"], ["--batch-sizes", "0"], ["--workers", "0"],
                                  ["--equal-steps", "--select-lr"]])
def test_bad_flags_are_refused(args, tmp_path):
    with pytest.raises(SystemExit) as refused:
        sweep.main([*args, "--results", str(tmp_path / "r.json")])
    assert refused.value.code == 2 and not (tmp_path / "r.json").exists()


def test_results_paths_are_relative_to_the_working_folder(tiny_mnist, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert sweep.main([*SMOKE, "--equal-steps", "--batch-sizes", "128", "--norms", "gn", "--data-dir",
                       str(tiny_mnist)]) == 0
    results = json.loads((tmp_path / sweep.RESULTS["equal_steps"]).read_text())
    assert [(r["config"]["batch_size"], r["config"]["epochs"]) for r in results["runs"]] == [(128, 2)]
    assert (tmp_path / "runs" / "batch_size" / run_name(Config(norm="gn", batch_size=128, epochs=2))).is_dir()


# ---- the Welch tables: Bonferroni over each batch size's family, verdicts as stats.welch gives them ----------------
APART, CLOSE = ([99.30, 99.31, 99.29], [98.50, 98.52, 98.48]), ([99.3, 99.2, 99.4], [99.25, 99.35, 99.2])


def test_welch_by_batch_adjusts_over_each_batch_sizes_family():
    from plumbing.stats import welch
    accs = {("BN", 8): APART[0], ("GN", 8): APART[1], ("LN", 8): [99.0],  # one LN seed: no row, still in the family
            ("BN", 64): CLOSE[0], ("GN", 64): CLOSE[1], ("LN", 64): [99.3, 99.1, 99.2]}
    lines = sweep.welch_by_batch("The norms", accs, [("BN", "GN"), ("BN", "LN"), ("GN", "LN")]).splitlines()
    assert lines[0] == "*The norms* (3 comparisons at each batch size, one Bonferroni family):"
    assert "98.33% interval (Welch)" in lines[2]  # 1 - 0.05/3, though batch 8 shows one row
    rows = lines[4:]
    assert [row.split(" | ")[0] for row in rows] == ["| batch 8: BN − GN", "| batch 64: BN − GN", "| batch 64: BN − LN",
                                                    "| batch 64: GN − LN"]
    assert rows[0].endswith("| **separated** |")
    close = welch(*CLOSE, alpha=0.05 / 3)
    assert rows[1].endswith(f"| {close['low']:+.2f} to {close['high']:+.2f} | not told apart "
                            f"(would detect {close['detectable']:.2f}) |")
    only_64 = sweep.welch_by_batch("The norms", accs, [("BN", "GN")], sizes=[64]).splitlines()
    assert "95% interval" in only_64[2] and [row.split(" | ")[0] for row in only_64[4:]] == ["| batch 64: BN − GN"]


def test_final_accs_and_best_points_read_finished_runs_in_seed_order():
    runs = [sweep_run("bn", 8, 1, 99.2, test_acc_batch_stats=98.0), sweep_run("bn", 8, 0, 99.0, test_acc_batch_stats=97.0),
            sweep_run("bn", 64, 0, 99.4), sweep_run("bn", 64, 1, 99.5), {**sweep_run("gn", 8, 0, 10.0), "diverged": 2},
            sweep_run("gn", 8, 1, 99.1)]
    assert sweep.final_accs(runs) == {("BN", 8): [99.0, 99.2], ("BN", 64): [99.4, 99.5], ("GN", 8): [99.1]}
    assert sweep.final_accs(runs, "test_acc_batch_stats", " (batch stats)") == {("BN (batch stats)", 8): [97.0, 98.0]}
    accs = {**sweep.final_accs(runs), ("GN", 8): [99.1, 99.3]}
    [(name_a, a, name_b, b)] = sweep.best_points(accs, ["BN", "GN"])
    assert (name_a, a, name_b, b) == ("BN at batch 64", [99.4, 99.5], "GN at batch 8", [99.1, 99.3])


def test_mixed_machines_names_each_point_trained_on_two_machines():
    def on(cpu, run):
        return {**run, "cpu": cpu, "fingerprint": {"family_model_stepping": "6/207/2" if cpu == "Intel" else "26/2/1"}}
    runs = [on("Intel", sweep_run("in", 64, 0, 98.2)), on("Intel", sweep_run("in", 64, 1, 98.4)),
            on("AMD", sweep_run("in", 64, 2, 98.5)), on("AMD", sweep_run("in", 8, 0, 98.7)),
            on("AMD", sweep_run("in", 8, 1, 98.9))]
    assert sweep.mixed_machines(runs) == ("IN at batch 64: seeds 0, 1 on Intel, family/model 6/207, "
                                          "seed 2 on AMD, family/model 26/2")
    assert sweep.mixed_machines(runs[3:]) == ""


def test_sections_compare_the_sweeps_runs(tmp_path):
    assert sweep.gn_family_welch_section(tmp_path).startswith("Not run yet: `python -m lab.sweep`")
    def extras(norm, seed):
        return {"test_acc_batch_stats": 97.5 - seed / 10, "test_acc_precise_stats": 98.5 + seed / 5} if norm == "bn" else {}
    runs = [{**sweep_run(norm, 8, seed, acc + seed / 10, **extras(norm, seed)), "device": "cpu", "torch": "2.0",
             "cpu": "Some CPU"} for seed in range(3) for norm, acc in (("bn", 98.0), ("gn", 99.0), ("ln", 99.1))]
    (tmp_path / "batch_size_sweep.json").write_text(json.dumps({"summary": [], "runs": runs}))
    assert sweep.gn_family_welch_section(tmp_path).startswith("Not run yet: `python -m lab.sweep --norms gn2 in")
    text = sweep.batch_size_welch_section(tmp_path)
    assert "| batch 8: BN − GN | 3 + 3 | 98.10 | 99.10 | -1.00 |" in text
    assert "| BN at batch 8 − GN at batch 8 |" in text and "| batch 8: GN − BN (recomputed stats) |" in text
    runs += [{**sweep_run("none", 8, seed, 97.0 + seed / 10), "device": "cpu", "torch": "2.1", "cpu": "Other CPU"}
             for seed in range(3)]
    (tmp_path / "batch_size_sweep.json").write_text(json.dumps({"summary": [], "runs": runs}))
    text = sweep.no_norm_welch_section(tmp_path)
    assert "*No norm against each norm* (5 comparisons at each batch size" in text and "99% interval" in text
    assert [line.split(" | ")[0] for line in text.splitlines()[4:7]] == [
        "| batch 8: no norm − BN", "| batch 8: no norm − GN", "| batch 8: no norm − LN"]  # no GN(2), IN: no rows
    assert "torch 2.1" in text and "two machines:" not in text
