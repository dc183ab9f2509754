"""bench.py: the speed comparison of the data pipelines, and the norms' costs at every batch size."""
import json
import subprocess
import sys

import pytest

from bench import ratios, summarize
from conftest import ROOT
from config import BATCH_SIZES


@pytest.mark.parametrize("lever", ["none", "bf16"])
def test_bench_runs_every_pipeline_and_reports_the_ratio(tiny_mnist, tmp_path, lever):
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, str(ROOT / "bench.py"), "--device", "cpu", "--data-dir",
                             str(tiny_mnist), "--steps", "3", "--rounds", "3", "--warmup", "1",
                             "--lever", lever, "--out", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("ratio classic/ours: ") and float(last.split(": ")[1]) > 0
    report = json.loads(out.read_text())
    assert report["args"]["lever"] == lever
    assert set(report["results"]) == {"ours", "model", "classic"}
    for r in report["results"].values():
        assert len(r["train_times_s"]) == len(r["test_times_s"]) == 3
        assert r["train_epoch_s"] > 0 and r["peak_memory_mb"] > 0
        assert r["epoch_s"] == pytest.approx(r["train_epoch_s"] + r["test_pass_s"])
    assert len(report["round_ratios"]) == 3 and report["ratio_classic_over_model"] > 0
    assert 1e6 < report["flops_per_training_image"] < 1e8 and report["hardware"]["cpu_count"] >= 1


def test_epoch_ratio_counts_the_test_pass_and_scales_steps_to_an_epoch():
    times = {"ours": {"train_times_s": [1.0, 3.0, 2.0], "test_times_s": [0.5, 0.5, 0.5], "warmup_s": 0.1},
             "classic": {"train_times_s": [4.0, 4.0, 4.0], "test_times_s": [1.0, 5.0, 2.0], "warmup_s": 0.1}}
    # epoch = time of 10 steps / 10 x 938 steps + one test pass, round by round
    assert ratios(times, 10, 64, "classic", "ours") == pytest.approx(  # 938 steps per 60k epoch
        [(0.4 * 938 + c) / (o / 10 * 938 + 0.5) for o, c in [(1.0, 1.0), (3.0, 5.0), (2.0, 2.0)]])
    results = summarize(times, 10, 64)
    assert results["ours"]["train_epoch_s"] == pytest.approx(0.2 * 938)
    assert results["classic"]["epoch_s"] == pytest.approx(0.4 * 938 + 2.0)
    assert results["ours"]["train_images_per_s"] == pytest.approx(10 * 64 / 2.0)


def test_norm_costs_time_every_norm_at_every_batch_size(tmp_path):
    out = tmp_path / "norms.json"
    result = subprocess.run([sys.executable, str(ROOT / "bench.py"), "--norm-costs", "--device", "cpu",
                             "--rounds", "2", "--cost-images", "8", "--out", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    results = json.loads(out.read_text())["results"]
    assert set(results) == {"bn", "gn", "ln"}
    for by_batch in results.values():
        assert list(by_batch) == [str(b) for b in BATCH_SIZES]
        for cost in by_batch.values():
            assert len(cost["train_step_s"]) == len(cost["inference_batch_s"]) == 2  # the warm-up round dropped
            assert cost["train_epoch_s"] > 0 and cost["inference_images_per_s"] > 0
