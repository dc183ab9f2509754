"""The runner: in-process and on Ray give the same records; recorded runs are skipped, failures reported,
an interrupted run resumes, a cluster is joined by address, Ctrl-C keeps what finished."""
import json
import os
import signal
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

import runner
from conftest import OFFLINE, ROOT, start_main, wait_until
from config import Config, config_from_record, run_name
from runner import RunsFailed, run_configs, task_resources
from study import summarize

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    """One embedded Ray for the module (a start takes seconds); the runner uses it instead of its own."""
    runner.start_ray(2, None)
    yield
    ray.shutdown()


def configs(tiny_mnist, **changes):
    base = Config(**{"epochs": 1, "device": "cpu", "data_dir": str(tiny_mnist), **changes})
    return [replace(base, norm="gn", seed=0), replace(base, norm="bn", l1=1e-5, seed=1)]


def without_seconds(runs):
    return [{**run, "epochs": [{k: v for k, v in row.items() if k != "seconds"} for row in run["epochs"]]}
            for run in runs]


def test_workers_1_and_2_give_identical_records_and_weights(tiny_mnist, tmp_path, local_ray):
    records = {}
    for workers in (1, 2):
        folder = tmp_path / f"w{workers}"
        run_configs(configs(tiny_mnist), folder / "r.json", summarize, folder / "runs", workers=workers,
                    models_dir=folder / "models", log=lambda line: None)
        records[workers] = json.loads((folder / "r.json").read_text())["runs"]
    assert without_seconds(records[1]) == without_seconds(records[2])
    assert all(run["threads"] == 1 and "data_dir" not in run["config"] for run in records[1])
    for config in configs(tiny_mnist):
        a, b = (torch.load(tmp_path / f"w{w}" / "models" / f"{run_name(config)}.pt") for w in (1, 2))
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_recorded_run_is_skipped(tiny_mnist, tmp_path):
    results, lines = tmp_path / "r.json", []
    run_configs(configs(tiny_mnist)[:1], results, summarize, tmp_path / "runs", log=lines.append)
    before = results.read_bytes()
    run_configs(configs(tiny_mnist), results, summarize, tmp_path / "runs", log=lines.append)
    assert any(line.startswith("1 of 2 runs already in") for line in lines), lines
    runs = json.loads(results.read_text())["runs"]
    assert len(runs) == 2 and json.loads(before)["runs"][0] == runs[0]


def test_a_run_recorded_on_auto_is_not_trained_again_on_cpu(tiny_mnist, tmp_path):
    # the device says where a run trained, not what it computes: a re-run with --device cpu finds every record
    results, models, lines = tmp_path / "r.json", tmp_path / "models", []
    run_configs(configs(tiny_mnist, device="auto"), results, summarize, tmp_path / "runs", models_dir=models,
                log=lines.append)
    before = {path.name: path.stat().st_mtime_ns for path in models.iterdir()}, results.read_bytes()
    run_configs(configs(tiny_mnist, device="cpu"), results, summarize, tmp_path / "runs", models_dir=models,
                log=lines.append)
    assert lines[-1].startswith("2 of 2 runs already in"), lines
    assert ({path.name: path.stat().st_mtime_ns for path in models.iterdir()}, results.read_bytes()) == before


def test_a_task_that_raises_is_reported_and_the_others_finish(tiny_mnist, tmp_path, local_ray):
    broken = replace(configs(tiny_mnist)[0], norm="gn", gn_groups=3, seed=5)  # 3 divides no width: Net raises
    with pytest.raises(RunsFailed) as failed:
        run_configs([broken, *configs(tiny_mnist)], tmp_path / "r.json", summarize, tmp_path / "runs",
                    workers=2, log=lambda line: None)
    [(name, message)] = failed.value.failures
    assert name == run_name(broken) and "gn_groups=3 must divide every width" in message
    assert len(json.loads((tmp_path / "r.json").read_text())["runs"]) == 2


def test_a_run_killed_half_way_resumes_from_its_checkpoint(tiny_mnist, tmp_path):
    config = replace(configs(tiny_mnist)[0], epochs=8)
    whole = run_configs([config], tmp_path / "whole.json", summarize, tmp_path / "whole", log=lambda line: None)
    script = ("import sys; from runner import run_configs; from study import summarize; from config import Config\n"
              f"run_configs([Config(**{vars(config)!r})], {str(tmp_path / 'cut.json')!r}, summarize, "
              f"{str(tmp_path / 'cut')!r})")
    process = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env={**os.environ, **OFFLINE},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run_dir = tmp_path / "cut" / run_name(config)
    wait_until(lambda: (run_dir / "metrics.json").exists(), 120, f"the first epoch in {run_dir}")
    process.kill()  # no chance to clean up
    process.wait(timeout=30)
    assert not (tmp_path / "cut.json").exists(), "the run ended before it was killed: nothing to resume"
    lines = []
    resumed = run_configs([config], tmp_path / "cut.json", summarize, tmp_path / "cut", log=lines.append)
    assert any(f"holds" in line and "of 8 epochs; continuing" in line for line in lines), lines
    assert without_seconds(resumed) == without_seconds(whole)


def test_resources_ask_for_a_gpu_share_only_when_training_on_a_gpu():
    assert task_resources("cpu", cuda_visible=True) == {"num_cpus": 1, "num_gpus": 0}
    assert task_resources("auto", cuda_visible=False) == {"num_cpus": 1, "num_gpus": 0}
    assert task_resources("auto", cuda_visible=True) == {"num_cpus": 1, "num_gpus": 0.25}
    assert task_resources("cuda", 0.5, cuda_visible=True) == {"num_cpus": 1, "num_gpus": 0.5}


CLUSTER = """
import sys
from ray.cluster_utils import Cluster
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "node_ip_address": "127.0.0.1",
                                                        "include_dashboard": False})
cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
import ray
import sweep
code = sweep.main(sys.argv[1:] + ["--address", cluster.address])
nodes = {node["NodeID"] for node in ray.nodes() if node["Alive"]}
print("nodes", len(nodes))
ray.shutdown()
cluster.shutdown()
sys.exit(code)
"""


def test_a_two_node_cluster_is_joined_by_address(tiny_mnist, tmp_path):
    args = ["--batch-sizes", "16", "--seeds", "0", "--epochs", "1", "--norms", "gn", "ln", "--device", "cpu",
            "--data-dir", str(tiny_mnist), "--out", str(tmp_path / "runs"), "--results", str(tmp_path / "r.json"),
            "--images", str(tmp_path)]
    result = subprocess.run([sys.executable, "-c", CLUSTER, *args], cwd=ROOT, env={**os.environ, **OFFLINE},
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "nodes 2" in result.stdout
    assert len(json.loads((tmp_path / "r.json").read_text())["runs"]) == 2


def test_ctrl_c_keeps_finished_runs_and_a_second_start_skips_them(tiny_mnist, tmp_path):
    args = ["--norm", "all", "--seeds", "0", "1", "2", "--epochs", "1", "--train-subset", "20000", "--workers", "2",
            "--data-dir", tiny_mnist, "--out", tmp_path / "R", "--results", tmp_path / "S", "--images", tmp_path / "I",
            "--device", "cpu"]
    process = start_main(*args, cwd=tmp_path)
    results = tmp_path / "S" / "study.json"
    try:
        wait_until(lambda: results.exists() and json.loads(results.read_text())["runs"], 600, f"a run in {results}",
                   process)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:  # the test failed: leave no driver (and its Ray) behind
            process.kill()
    recorded = json.loads(results.read_text())["runs"]
    assert process.returncode == 130, stderr
    assert "every finished run is recorded in" in stderr and "Continue with: python" in stderr
    assert 1 <= len(recorded) < 9
    saved = {p.name for p in (tmp_path / "S" / "models").iterdir()}
    assert {f"{run_name(config_from_record(run['config']))}.pt" for run in recorded} <= saved  # weights first
    finished = start_main(*args, cwd=tmp_path)
    stdout, stderr = finished.communicate(timeout=600)
    assert finished.returncode == 0, stderr
    assert f"{len(recorded)} of 9 runs already in" in stdout
    runs = json.loads(results.read_text())["runs"]
    assert len(runs) == 9 and all(run in runs for run in recorded)
    assert (tmp_path / "I" / "test_accuracy.png").exists() and len(list((tmp_path / "S" / "models").iterdir())) == 9


def test_a_diverged_run_is_recorded_not_failed(tiny_mnist, tmp_path):
    diverging = replace(configs(tiny_mnist)[0], lr=1e30)
    runs = run_configs([diverging], tmp_path / "r.json", summarize, tmp_path / "runs", models_dir=tmp_path / "models",
                       log=lambda line: None)
    [run] = runs
    assert run["diverged"]["epoch"] == 1 and run["epochs"] == [] and run["params"] == 7410 and run["node"]
    assert summarize(runs)["GN"]["diverged"][0]["seed"] == 0 and not (tmp_path / "models").exists()
