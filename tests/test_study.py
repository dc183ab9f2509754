"""study.py: the study's configs, its results file, its summary and table."""
import pytest

from plumbing.config import STUDY_L1, VARIANTS, Config, run_label
from lab.study import STUDY_VARIANTS, TARGET_ACC, results_file, study_configs, summarize, summary_table, pairwise_table


def test_study_configs_are_seed_major_with_the_study_lambda():
    configs = study_configs(Config(epochs=3), seeds=[0, 1])
    assert [(c.seed, c.norm, c.l1) for c in configs] == [
        (s, n, l1) for s in (0, 1) for n, l1 in (("gn", 0.0), ("ln", 0.0), ("bn", STUDY_L1))]
    assert [run_label(c) for c in configs[:3]] == [VARIANTS[k].label for k in STUDY_VARIANTS] == ["GN", "LN", "BN+L1"]
    assert all(c.epochs == 3 for c in configs)


def test_study_configs_of_other_variants_and_another_lambda():
    configs = study_configs(Config(), seeds=[2], variants=("bn", "bn_l1", "gn"), l1=1e-4)
    assert [(c.norm, c.l1, c.seed) for c in configs] == [("bn", 0.0, 2), ("bn", 1e-4, 2), ("gn", 0.0, 2)]


def test_results_file(tmp_path):
    assert results_file(tmp_path) == tmp_path / "study.json"
    assert results_file(tmp_path, ["gn", "ln", "bn_l1"]) == tmp_path / "study.json"
    assert results_file(tmp_path, ("bn", "bn_l1")) == tmp_path / "study_bn_bn_l1.json"
    assert results_file(tmp_path, ("ln", "gn", "bn_l1")) == tmp_path / "study_ln_gn_bn_l1.json"  # order matters


def study_run(label, config, curve):
    return {"variant": label, "params": 7410, "config": {"seed": 0, **config},
            "epochs": [{"epoch": e + 1, "test_acc": acc, "seconds": 10.0 + e} for e, acc in enumerate(curve)]}


def test_summarize_per_variant():
    gn = [[98.0, 99.0, 99.3, 99.5, 99.5, 99.6], [98.2, 99.2, 99.5, 99.3, 99.4, 99.4]]
    runs = [study_run("GN", {"norm": "gn", "seed": seed}, curve) for seed, curve in enumerate(gn)]
    runs.append(study_run("BN+L1", {"norm": "bn", "l1": STUDY_L1}, [97.0, 98.0, 98.5, 99.0, 99.1, 99.2]))
    summary = summarize(runs)
    assert list(summary) == ["GN", "BN+L1"]
    s = summary["GN"]
    assert s["params"] == 7410 and s["seeds"] == [0, 1] and s["final_test_acc"] == [99.6, 99.4]
    assert s["mean"] == pytest.approx(99.5) and s["std"] == pytest.approx(0.1414, abs=1e-4)
    assert (s["min"], s["max"]) == (99.4, 99.6)
    assert s["best_epoch_mean"] == pytest.approx(99.5)
    assert s["last5_min_of_mean"] == pytest.approx(99.1)  # epochs 2-6 of the mean curve: 99.1, 99.4, 99.4, ...
    assert s["first_epoch_mean_reaches_target"] == 3 and TARGET_ACC == 99.4  # mean of epoch 3: 99.4
    assert s["mean_seconds_per_epoch"] == pytest.approx(12.5)
    assert summary["BN+L1"]["std"] == 0.0 and summary["BN+L1"]["first_epoch_mean_reaches_target"] is None


def test_summary_table_one_row_per_variant():
    runs = [study_run("LN", {"norm": "ln"}, [99.0, 99.45]), study_run("BN+L1", {"norm": "bn", "l1": STUDY_L1}, [99.0])]
    lines = summary_table(summarize(runs)).splitlines()
    assert len(lines) == 4 and lines[0].startswith("| variant | params | final test acc, mean +- std |")
    assert lines[2] == "| LN | 7,410 | 99.45 +- 0.00% | 99.45% | 99.45% | 1 | 2 | 99.00% |"
    assert lines[3] == "| BN+L1 | 7,410 | 99.00 +- 0.00% | 99.00% | 99.00% | 1 | - | 99.00% |"


def test_diverged_runs_are_summarized_apart():
    finished = study_run("none", {"norm": "none", "seed": 0}, [98.0, 99.0])
    early = {**study_run("none", {"norm": "none", "seed": 1}, []), "diverged": {"epoch": 1, "step": 7}}
    late = {**study_run("none", {"norm": "none", "seed": 2}, [97.0]), "diverged": {"epoch": 2, "step": 900}}
    s = summarize([finished, early, late])["none"]
    assert s["seeds"] == [0, 1, 2] and s["final_test_acc"] == [99.0] and s["mean"] == 99.0
    assert s["diverged"] == [{"seed": 1, "epoch": 1, "step": 7}, {"seed": 2, "epoch": 2, "step": 900}]
    assert summary_table({"none": s}).splitlines()[2] == "| none | 7,410 | 99.00 +- 0.00% | 99.00% | 99.00% | 3 (2 diverged) | - | 98.00% |"
    nothing = summarize([early])["none"]
    assert nothing["mean"] is None and nothing["last5_min_of_mean"] is None and nothing["mean_seconds_per_epoch"] is None
    assert "every seed diverged" in summary_table({"none": nothing})


def test_pairwise_table_of_known_samples():
    runs = [study_run(label, {"norm": norm, "seed": seed}, [acc])
            for label, norm, accs in (("GN", "gn", [99.5, 99.6, 99.7]), ("LN", "ln", [99.2, 99.3, 99.4]))
            for seed, acc in enumerate(accs)]
    [line] = pairwise_table(summarize(runs)).splitlines()[2:]
    # difference 0.3, se = sqrt(0.01/3 + 0.01/3) = 0.0816, df = 4, t(0.975, 4) = 2.776, t(0.8, 4) = 0.941
    assert line == "| GN - LN | 3 + 3 | +0.300 | +0.073 to +0.527 | yes | yes | 0.304 |"  # one pair: nothing to correct


def test_pairwise_bonferroni_widens_each_interval_for_the_number_of_pairs():
    runs = [study_run(label, {"norm": norm, "seed": seed}, [acc])
            for label, norm, accs in (("GN", "gn", [99.5, 99.6, 99.7]), ("LN", "ln", [99.2, 99.3, 99.4]),
                                      ("BN", "bn", [99.5, 99.6, 99.7]))
            for seed, acc in enumerate(accs)]
    lines = pairwise_table(summarize(runs)).splitlines()
    assert "Bonferroni for 3 pairs" in lines[0]
    # GN - LN: 95% t(0.975, 4) = 2.776 excludes 0 (0.073 to 0.527); for 3 pairs t(1 - 0.05/6, 4) = 3.961,
    # half-width 3.961 x 0.0816 = 0.323 > 0.300: it no longer does
    assert lines[2] == "| GN - LN | 3 + 3 | +0.300 | +0.073 to +0.527 | yes | no | 0.304 |"
