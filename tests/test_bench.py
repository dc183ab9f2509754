import json
import subprocess
import sys

from conftest import ROOT


def test_bench_runs_both_pipelines_and_reports_the_ratio(tiny_mnist, tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, str(ROOT / "bench.py"), "--device", "cpu", "--data-dir",
                             str(tiny_mnist), "--steps", "3", "--reps", "2", "--test-reps", "1",
                             "--warmup", "1", "--rounds", "2", "--out", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("ratio classic/ours: ") and float(last.split(": ")[1]) > 0
    report = json.loads(out.read_text())
    assert set(report["results"]) == {"ours", "classic"}
    for r in report["results"].values():
        assert len(r["train_times_s"]) == 2 * 2 and r["train_epoch_s"] > 0 and r["peak_memory_mb"] > 0
    assert 1e6 < report["flops_per_training_image"] < 1e8 and report["hardware"]["cpu_count"] >= 1
