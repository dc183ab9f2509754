"""bench.py: its jobs (the data pipelines, the norms' costs and inference, the runner's speed-up, the whole command),
each with its own flags, parsed before torch is imported; the round-robin order and the epoch arithmetic."""
import json
import subprocess
import sys

import pytest
import torch

from conftest import ROOT
from lab import bench
from lab.bench import norms
from lab.bench.pipelines import Spec, flops_per_training_image, make_pipeline, ratios, summarize
from lab.bench.timing import device_of, round_robin
from plumbing.config import BATCH_SIZES, NORM_COSTS_FILE
from test_layers import imports, layer, modules


@pytest.mark.parametrize("lever", ["none", "bf16"])
def test_bench_runs_every_pipeline_and_reports_the_ratio(tiny_mnist, tmp_path, capsys, lever):
    bench.main(["pipelines", "--device", "cpu", "--data-dir", str(tiny_mnist), "--steps", "3", "--rounds", "3",
                "--warmup", "1", "--lever", lever, "--results", str(tmp_path)])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("ratio classic/ours: ") and float(last.split(": ")[1]) > 0
    out = tmp_path / ("bench_cpu.json" if lever == "none" else f"bench_cpu_{lever}.json")
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


def test_norms_time_every_norm_at_every_batch_size_then_inference(tmp_path, monkeypatch):
    assert norms.BATCH_SIZES == BATCH_SIZES  # the job's sizes; two of them here (512: half a second a step)
    monkeypatch.setattr(norms, "BATCH_SIZES", (2, 64))
    bench.main(["norms", "--device", "cpu", "--rounds", "1", "--cost-images", "8", "--inference-rounds", "1",
                "--inference-images", "4", "--results", str(tmp_path)])
    results = json.loads((tmp_path / NORM_COSTS_FILE).read_text())["results"]
    assert list(results) == ["bn", "brn", "gn", "gnws", "ln", "frn", "evo"]  # every norm that trains
    for by_batch in results.values():
        assert list(by_batch) == ["2", "64"]
        for cost in by_batch.values():
            assert len(cost["train_step_s"]) == len(cost["inference_batch_s"]) == 1  # of 2: the warm-up round dropped
            assert cost["train_epoch_s"] > 0 and cost["inference_images_per_s"] > 0
    inference = json.loads((tmp_path / "bench_cpu_inference.json").read_text())
    assert set(inference["results"]) == {"bn", "bn_folded", "gn", "ln"}
    assert all(len(t["batch_s"]) == 1 for by_batch in inference["results"].values() for t in by_batch.values())
    assert inference["folded_max_abs_logit_difference"] < 1e-4


def test_round_robin_rotates_the_order_by_one_each_round():
    assert list(round_robin("abc", 4)) == [(0, list("abc")), (1, list("bca")), (2, list("cab")), (3, list("abc"))]
    assert [order for _, order in round_robin((1, 2), 3)] == [[1, 2], [2, 1], [1, 2]]  # bench.py workers


@pytest.mark.parametrize("flags", [["--lever", "bf16"], ["--steps", "3"]])
def test_a_job_refuses_another_jobs_flags(flags, capsys):
    with pytest.raises(SystemExit) as exit_:
        bench.main(["norms", *flags])
    assert exit_.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err


@pytest.mark.parametrize("flags", [["--help"], *([job, "--help"] for job in bench.JOBS), ["norms", "--steps", "3"], []])
def test_help_and_bad_flags_are_answered_before_torch_is_imported(flags):
    code = ("import sys\nfrom lab import bench\ntry:\n    bench.main(sys.argv[1:])\nexcept SystemExit as e:\n"
            "    assert e.code in (0, 2), e.code\nassert 'torch' not in sys.modules, sorted(sys.modules)")
    result = subprocess.run([sys.executable, "-c", code, *flags], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]


def test_an_unset_device_is_settled_by_the_job_and_recorded():
    args = bench.parse_args(["norms"])
    assert args.device is None
    assert device_of(args).type == args.device == ("cuda" if torch.cuda.is_available() else "cpu")


def test_brn_trains_in_the_pipelines_given_its_steps(tiny_mnist):
    pipeline = make_pipeline("model", Spec("cpu", str(tiny_mnist), 32, "brn", "none", 2, 0, "default", 4))
    pipeline.train_steps(2)  # after the warm-up's 2: all 4 steps of its schedule
    assert flops_per_training_image(8, "brn") > 0


def test_the_bench_package_imports_only_down():
    """test_layers reads lab/*.py; the package's modules are read here, by the same rules."""
    package = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
               for p in sorted((ROOT / "lab" / "bench").glob("*.py"))}
    known = {**modules(), **package}
    upward = [(name, target) for name, path in package.items() for target in imports(path, known)
              if layer(target) > layer(name)]
    assert len(package) == 7 and upward == [], upward


def test_a_job_must_be_named(capsys):
    with pytest.raises(SystemExit) as exit_:
        bench.main(["--device", "cpu"])
    assert exit_.value.code == 2


def test_command_times_main_at_one_and_two_workers_with_equal_numbers(tiny_mnist, tmp_path):
    bench.main(["command", "--data-dir", str(tiny_mnist), "--seeds", "0", "--epochs", "1", "--train-subset", "256",
                "--results", str(tmp_path), "--label", "t"])
    report = json.loads((tmp_path / "bench_cpu_command_e1_n256_t.json").read_text())
    assert report["same_accuracies"] and len(report["test_acc"]) == 3  # GN, LN and BN+L1 of seed 0
    assert all(len(report["wall_s"][w]) == 1 and report["wall_s"][w][0] > report["epoch_seconds_sum"][w][0] / 2
               for w in ("1", "2"))
    assert report["speedup"] == report["median_wall_s"]["1"] / report["median_wall_s"]["2"] and "commit" in report
