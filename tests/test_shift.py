"""shift.py and the math behind it: GN and LN remove a positive rescaling of the input exactly, BN with
running statistics does not; BN's three evaluations leave the model as it was; the command writes its
results file and both figures from saved models, without training."""
import json
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lab import shift
from lab.bn_stats import evaluate_adapted, evaluate_with_batch_statistics, folded
from conftest import check_figures
from plumbing.config import Config, Engine
from model import Net
from lab.runner import run_configs
from lab.study import results_file, summarize as summarize_study
from lab.train import set_seed


def trained_like(norm, seed=0):
    """A Net whose BN running statistics are not the identity, as after training."""
    set_seed(seed)
    model = Net(norm)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(32, 1, 28, 28) * 2 + 1)
    return model.eval()


@pytest.mark.parametrize("norm", ["gn", "ln"])
def test_per_image_norms_remove_a_positive_rescaling_of_the_input_exactly(norm):
    model, x = trained_like(norm), torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        for c in (0.3, 4.0):  # the first conv has no bias: its output scales by c, and GN/LN divide it out
            assert torch.allclose(model(c * x), model(x), atol=1e-4), c


def test_batch_norm_with_running_statistics_does_not():
    model, x = trained_like("bn"), torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        assert (model(4.0 * x) - model(x)).abs().max() > 1e-3  # 10x the tolerance GN and LN meet above


def state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_the_three_bn_evaluations_leave_the_state_dict_unchanged():
    model = trained_like("bn")
    before = state(model)
    x, y = torch.randn(96, 1, 28, 28), torch.randint(0, 10, (96,))
    evaluate_with_batch_statistics(model, x, y, 64)
    evaluate_adapted(model, x, y)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_adapted_statistics_equal_a_hand_computation():
    bn = nn.BatchNorm2d(1)
    with torch.no_grad():
        bn.weight.fill_(1.5), bn.bias.fill_(0.2), bn.running_mean.fill_(9.0), bn.running_var.fill_(4.0)
    model = nn.Sequential(bn, nn.Flatten()).eval()  # 10 "logits": the 2 x 5 pixels of each image
    x, y = torch.randn(12, 1, 2, 5) * 3 - 1, torch.randint(0, 10, (12,))
    batches = (x[:6], x[6:])
    mean = torch.stack([b.mean() for b in batches]).mean()  # each batch weighs the same
    var = torch.stack([b.var() for b in batches]).mean()    # BN's running variance is the unbiased one
    logits = ((x - mean) / torch.sqrt(var + bn.eps) * 1.5 + 0.2).flatten(1)
    adapted = evaluate_adapted(model, x, y, batch_size=6)
    assert adapted["loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)
    assert adapted["acc"] == pytest.approx(100.0 * (logits.argmax(1) == y).float().mean().item())
    assert bn.running_mean.item() == 9.0 and bn.running_var.item() == 4.0


def test_folded_bn_gives_the_same_logits_without_a_bn_layer():
    model, x = trained_like("bn"), torch.randn(16, 1, 28, 28)
    fused = folded(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    with torch.no_grad():
        assert (fused(x) - model(x)).abs().max() < 1e-4
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the original is untouched


def test_conditions_cover_every_shift_and_level_after_clean():
    conditions = shift.conditions()
    assert conditions[0] == ("clean", 0) and len(conditions) == 1 + 8 * 3 + 1
    assert len(set(conditions)) == len(conditions)


def test_shift_py_writes_results_and_both_figures_from_saved_models(tiny_mnist, tmp_path):
    base = Config(epochs=1, device="cpu", data_dir=str(tiny_mnist))
    results = tmp_path / "results"
    for variants in shift.STUDIES:  # the study's three variants and the BN control, one seed each
        configs = [replace(base, seed=0, norm=k.split("_")[0], l1=1e-5 if k.endswith("_l1") else 0.0)
                   for k in variants]
        run_configs(configs, results_file(results, variants), summarize_study, Engine(str(tmp_path / "runs")),
                    models_dir=results / "models", log=lambda line: None)
    assert shift.main(["--results", str(results), "--images", str(tmp_path / "images"),
                       "--data-dir", str(tiny_mnist), "--workers", "1"]) == 0
    written = json.loads((results / "shift.json").read_text())
    rows = written["results"]
    bn_rows = [r for r in rows if r["variant"] in ("bn", "bn_l1")]
    assert {r["bn_stats"] for r in bn_rows} == {"running", "test_batch", "adapted"}
    assert all(r["bn_stats"] is None for r in rows if r["variant"] in ("gn", "ln"))
    assert len(rows) == len(shift.conditions()) * (2 + 2 * 3)
    assert set(rows[0]) == {"variant", "seed", "shift", "severity", "bn_stats", "test_acc", "test_loss"}
    study = json.loads(results_file(results).read_text())["runs"]
    for run in study:  # the clean rows as deployed equal the study's final accuracies
        key = run["config"]["norm"] + ("_l1" if run["config"]["l1"] else "")
        clean = next(r for r in rows if (r["variant"], r["shift"], r["bn_stats"]) == (key, "clean", r["bn_stats"])
                     and r["bn_stats"] in (None, "running"))
        assert clean["test_acc"] == run["epochs"][-1]["test_acc"], key
    check_figures(tmp_path / "images", {"shift": (1200, 1200), "shift_examples": (720, 1728)})
    assert "| shift | severity |" in shift.shift_table(written["summary"])


def test_missing_models_are_named(tmp_path, capsys):
    assert shift.main(["--results", str(tmp_path), "--images", str(tmp_path), "--workers", "1"]) == 1
    assert "study.json is missing" in capsys.readouterr().err


def test_from_evaluates_other_results_files_skips_diverged_runs_and_draws_no_figure(tiny_mnist, tmp_path):
    guide = tmp_path / "guide"
    config = Config(norm="gn", epochs=1, device="cpu", data_dir=str(tiny_mnist))
    run_configs([config], guide / "recipe.json", summarize_study, Engine(str(tmp_path / "runs")),
                models_dir=guide / "models", log=lambda line: None)
    recipe = json.loads((guide / "recipe.json").read_text())
    diverged = {**recipe["runs"][0], "config": {**recipe["runs"][0]["config"], "norm": "none"}, "diverged": {"epoch": 1}}
    (guide / "recipe.json").write_text(json.dumps({**recipe, "runs": recipe["runs"] + [diverged]}))  # no weights
    assert shift.main(["--results", str(guide), "--from", "recipe.json", "--images", str(tmp_path / "images"),
                       "--data-dir", str(tiny_mnist), "--workers", "1"]) == 0
    rows = json.loads((guide / "shift.json").read_text())["results"]
    assert {r["variant"] for r in rows} == {"gn"} and len(rows) == len(shift.conditions())
    assert not (tmp_path / "images").exists()  # the study's figures are not drawn from other files
    assert shift.main(["--results", str(guide), "--from", "missing.json", "--workers", "1"]) == 1
