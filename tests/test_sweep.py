"""The batch-size sweep: runs, resumes, shards and merges; BN's batch- and recomputed-statistics evaluations."""
import json
import math

import matplotlib.image as mpimg
import pytest
import torch
from torch import nn

import sweep
from data import DeviceLoader
from model import Net
from plots import plot_batch_size
from utils import Config, evaluate, set_seed

SMOKE = ["--batch-sizes", "8", "32", "--seeds", "0", "--epochs", "1", "--device", "cpu"]


def run_sweep(tiny_mnist, tmp_path, *extra):
    return sweep.main([*SMOKE, "--data-dir", str(tiny_mnist), "--out", str(tmp_path / "runs"),
                       "--results", str(tmp_path / "sweep.json"), "--images", str(tmp_path / "images"), *extra])


def test_smoke_sweep_writes_results_and_figure(tiny_mnist, tmp_path):
    assert run_sweep(tiny_mnist, tmp_path) == 0
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
    assert mpimg.imread(tmp_path / "images" / "batch_size.png").shape[1::-1] == (1680, 660)


def test_half_finished_sweep_resumes_and_skips_recorded_runs(tiny_mnist, tmp_path, capsys):
    assert run_sweep(tiny_mnist, tmp_path, "--shard", "2/2") == 0  # every second run: 3 of 6
    first = json.loads((tmp_path / "sweep.json").read_text())["runs"]
    assert len(first) == 3
    capsys.readouterr()
    assert run_sweep(tiny_mnist, tmp_path) == 0
    out = capsys.readouterr().out
    assert "3 of 6 runs already in" in out and out.count("done: ") == 3 and "0 runs left" in out
    runs = json.loads((tmp_path / "sweep.json").read_text())["runs"]
    assert len(runs) == 6 and all(run in runs for run in first)  # recorded runs untouched
    assert len(list((tmp_path / "runs").iterdir())) == 6


def test_shards_partition_the_runs_and_merge(tiny_mnist, tmp_path):
    configs = sweep.sweep_configs(Config(epochs=1))
    shards = [sweep.shard_of(configs, (k, 3)) for k in (1, 2, 3)]
    assert sorted(map(repr, sum(shards, []))) == sorted(map(repr, configs))
    for k in (1, 2):
        part = tmp_path / f"part{k}"
        assert sweep.main([*SMOKE, "--data-dir", str(tiny_mnist), "--shard", f"{k}/2", "--out", str(part),
                           "--results", str(part / "sweep.json"), "--images", str(part)]) == 0
    merged = tmp_path / "merged.json"
    assert sweep.main(["--merge", str(tmp_path / "part1" / "sweep.json"), str(tmp_path / "part2" / "sweep.json"),
                       "--results", str(merged)]) == 0
    assert len(json.loads(merged.read_text())["runs"]) == 6
    with pytest.raises(SystemExit):
        sweep.main(["--shard", "3/2"])


def test_lr_rules_agree_at_the_study_batch_size_and_are_capped():
    assert all(sweep.peak_lr(64, rule) == 0.01 for rule in sweep.LR_RULES)
    assert sweep.peak_lr(4, "sqrt") == pytest.approx(0.0025) and sweep.peak_lr(4, "linear") == pytest.approx(0.000625)
    assert sweep.peak_lr(4096, "linear") == sweep.LR_CAP


def running_stats(model):
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}


def test_batch_statistics_evaluation_matches_hand_computation_and_keeps_running_stats():
    bn = nn.BatchNorm2d(2)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([2.0, 0.5]))
        bn.bias.copy_(torch.tensor([0.1, -0.3]))
        bn.running_mean.copy_(torch.tensor([5.0, -5.0]))
        bn.running_var.copy_(torch.tensor([9.0, 0.1]))
    model = nn.Sequential(bn).eval()
    before = running_stats(model)
    x = torch.arange(36.0).reshape(2, 2, 3, 3) ** 1.5
    mean = x.mean((0, 2, 3), keepdim=True)
    var = ((x - mean) ** 2).mean((0, 2, 3), keepdim=True)  # BN normalizes with the biased variance
    by_hand = (x - mean) / torch.sqrt(var + bn.eps) * bn.weight.view(1, 2, 1, 1) + bn.bias.view(1, 2, 1, 1)
    assert torch.allclose(sweep.with_batch_statistics(model).eval()(x), by_hand, atol=1e-5)
    assert all(torch.equal(before[k], v) for k, v in running_stats(model).items())
    assert not torch.allclose(model(x), by_hand)  # the original still uses its running statistics


def test_recomputed_statistics_average_the_batches_and_keep_the_original():
    model = nn.Sequential(nn.BatchNorm2d(1)).eval()
    before = running_stats(model)
    images = torch.randn(sweep.PRECISE_IMAGES, 1, 4, 4) * 3 + 2
    precise = sweep.with_precise_statistics(model, images, torch.zeros(len(images), dtype=torch.long), 0, 0)
    assert precise[0].running_mean.item() == pytest.approx(images.mean().item(), abs=1e-4)
    assert precise[0].running_var.item() == pytest.approx(images.var().item(), rel=1e-2)
    assert all(torch.equal(before[k], v) for k, v in running_stats(model).items())


def test_bn_statistics_metrics_on_a_net_leave_its_state_untouched():
    set_seed(0)
    model = Net("bn").eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
    metrics = sweep.bn_statistics_metrics(model, {"train": (x, y), "test": (x, y)}, Config(batch_size=8))
    assert set(metrics) == {"test_loss_batch_stats", "test_acc_batch_stats",
                            "test_loss_precise_stats", "test_acc_precise_stats"}
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert evaluate(model, DeviceLoader(x, y, 64))["loss"] != pytest.approx(metrics["test_loss_batch_stats"])


def fake_sweep():
    summary = []
    for norm, slope in (("bn", 0.3), ("gn", 0.0), ("ln", 0.05)):
        for b in (2, 8, 32):
            error = 1.0 + slope * (5 - math.log2(b))
            entry = {"norm": norm, "batch_size": b, "lr": 0.01, "epochs": 3, "seeds": [0, 1, 2],
                     "test_acc": {"mean": 100 - error, "min": 100 - error - 0.1, "max": 100 - error + 0.1},
                     "seconds_per_epoch": 100.0 / b}
            if norm == "bn":
                for key in ("test_acc_batch_stats", "test_acc_precise_stats"):
                    entry[key] = dict(entry["test_acc"])
            summary.append(entry)
    return {"summary": summary, "runs": [{"device": "cpu", "cpu": "Some CPU", "threads": 1}]}


def test_batch_size_plot_has_log2_axes_labels_and_a_line_per_curve():
    error_ax, time_ax = plot_batch_size(fake_sweep()).axes
    assert error_ax.get_xscale() == "log" and error_ax.get_yscale() == "log"
    assert error_ax.get_xlabel() == "training batch size (log2 scale)"
    assert error_ax.get_ylabel() == "test error (%, log scale)"
    assert error_ax.get_title() == "Test error after 3 epochs, mean over 3 seeds (band: min-max)"
    assert [t.get_text() for t in error_ax.get_legend().get_texts()] == [
        "BN", "BN, tested with batch statistics", "BN, running statistics recomputed after training", "GN", "LN"]
    assert [t.get_text() for t in time_ax.get_legend().get_texts()] == ["BN", "GN", "LN"]
    assert time_ax.get_ylabel() == "seconds per epoch" and "Some CPU, 1 thread(s)" in time_ax.get_title()
    assert [tick.get_text() for tick in error_ax.get_xticklabels()] == ["2", "8", "32"]
    assert list(error_ax.get_lines()[0].get_ydata()) == pytest.approx([2.2, 1.6, 1.0])
