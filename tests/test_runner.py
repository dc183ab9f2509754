"""The runner: in-process, in forked or spawned processes and on Ray give the same records; every epoch reaches
the driver's bar; recorded runs are skipped, failures reported, a dead worker's task retried, an interrupted run
resumes, a cluster is joined by address, Ctrl-C keeps what finished and leaves no worker behind. Only the Ray
tests need Ray."""
import json
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from lab import engine, runner
from conftest import OFFLINE, ROOT, start_main, wait_until
from plumbing.config import Config, Engine, config_from_record, run_name
from lab.engine import map_tasks, placement, task_resources
from lab.runner import RunsFailed, run_configs
from lab.study import summarize


@pytest.fixture(scope="module")
def local_ray():
    """A Ray on this machine (loopback) for the module (a start takes seconds), joined by its address."""
    ray = pytest.importorskip("ray")
    context = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="warning")
    yield context.address_info["address"]
    ray.shutdown()


def ray_started():
    return "ray" in sys.modules and sys.modules["ray"].is_initialized()


def configs(tiny_mnist, **changes):
    base = Config(**{"epochs": 1, "device": "cpu", "data_dir": str(tiny_mnist), **changes})
    return [replace(base, norm="gn", seed=0), replace(base, norm="bn", l1=1e-5, seed=1)]


def without_seconds(runs):
    """The records without what says where and how fast they ran (the numbers must be the same)."""
    return [{**{k: v for k, v in run.items() if k != "ray_node"},
             "epochs": [{k: v for k, v in row.items() if k != "seconds"} for row in run["epochs"]]} for run in runs]


# the forked workers' tests come first: a Ray started in this process would hold threads the forks inherit
def test_forked_workers_give_the_records_and_weights_of_one_process(tiny_mnist, tmp_path):
    assert not ray_started()
    check_workers_1_and_2_agree(tiny_mnist, tmp_path, "forked")


def test_spawned_workers_give_the_records_of_one_process(tiny_mnist, tmp_path, monkeypatch):
    monkeypatch.setattr(engine, "fork_is_safe", lambda: False)  # as on macOS or Windows
    check_workers_1_and_2_agree(tiny_mnist, tmp_path, "spawned")


def test_a_task_that_raises_in_a_forked_worker_is_reported_and_the_others_finish(tiny_mnist, tmp_path):
    assert not ray_started()
    check_a_failure_is_reported(tiny_mnist, tmp_path)


def test_the_driver_receives_every_epoch_of_a_forked_run_before_the_run_ends(tiny_mnist, tmp_path, monkeypatch):
    events = []  # ("epoch", run, epoch) as the driver's bar receives them, ("done", run) as the runs are recorded
    monkeypatch.setattr(runner.EpochBar, "progress", lambda bar, message: events.append(message))
    monkeypatch.setattr(runner.EpochBar, "run_done", lambda bar, config: events.append(("done", run_name(config))))
    runs = [replace(config, epochs=3) for config in configs(tiny_mnist)]
    run_configs(runs, tmp_path / "r.json", summarize, Engine(str(tmp_path / "runs"), 2), log=lambda line: None)
    for config in runs:
        name = run_name(config)
        mine = [event for event in events if event[:2] in (("epoch", name), ("done", name))]
        assert mine == [("epoch", name, 1), ("epoch", name, 2), ("epoch", name, 3), ("done", name)], events


def test_the_bar_counts_every_epoch_to_train(tiny_mnist, tmp_path, capsys):
    run_configs(configs(tiny_mnist, epochs=2), tmp_path / "r.json", summarize, Engine(str(tmp_path / "runs"), 2))
    err = capsys.readouterr().err
    assert "epochs: 100%" in err and "4/4" in err, err


def check_workers_1_and_2_agree(tiny_mnist, tmp_path, place, address=None):
    records, lines = {}, []
    for workers in (1, 2):
        folder = tmp_path / f"w{workers}"
        where = Engine(str(folder / "runs"), workers, address if workers == 2 else None)
        run_configs(configs(tiny_mnist), folder / "r.json", summarize, where, models_dir=folder / "models",
                    log=lines.append)
        records[workers] = json.loads((folder / "r.json").read_text())["runs"]
    assert any(line.endswith(f"2 to go ({engine.PLACES[place]})") for line in lines), lines
    assert without_seconds(records[1]) == without_seconds(records[2])
    assert all(run["threads"] == 1 and "data_dir" not in run["config"] for run in records[1])
    for config in configs(tiny_mnist):
        a, b = (torch.load(tmp_path / f"w{w}" / "models" / f"{run_name(config)}.pt") for w in (1, 2))
        assert all(torch.equal(a[k], b[k]) for k in a)


def check_a_failure_is_reported(tiny_mnist, tmp_path, address=None):
    broken = replace(configs(tiny_mnist)[0], norm="gn", gn_groups=3, seed=5)  # 3 divides no width: Net raises
    with pytest.raises(RunsFailed) as failed:
        run_configs([broken, *configs(tiny_mnist)], tmp_path / "r.json", summarize,
                    Engine(str(tmp_path / "runs"), 2, address), log=lambda line: None)
    [(name, message)] = failed.value.failures
    assert name == run_name(broken) and "gn_groups=3 must divide every width" in message
    assert len(json.loads((tmp_path / "r.json").read_text())["runs"]) == 2


def dies_the_first_time(marker):
    """A task whose worker process dies (as if killed) the first time it runs; returns its pid the second time."""
    if not marker.exists():
        marker.touch()
        os._exit(1)
    return os.getpid()


def test_a_forked_worker_that_dies_is_started_again_and_its_task_done(tmp_path):
    assert not ray_started()
    items = [(tmp_path / f"m{i}",) for i in range(3)]
    done = list(map_tasks(dies_the_first_time, items, workers=2))
    assert sorted(item for item, _, _ in done) == items and all(error is None for *_, error in done), done
    assert {pid for _, pid, _ in done}.isdisjoint({os.getpid()})  # in workers, not here


def test_where_tasks_run(monkeypatch):
    assert placement(1) == "here" and placement(2) == "forked"
    assert placement(2, on_gpu=True) == "here"  # a GPU on one machine: one run after another, no Ray, no fork
    assert placement(1, "auto") == "ray" and placement(2, "127.0.0.1:6379", on_gpu=True) == "ray"  # only a cluster
    monkeypatch.setattr(engine, "fork_is_safe", lambda: False)
    assert placement(2) == "spawned"


def test_a_gpu_without_an_address_never_reaches_ray(tiny_mnist, tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "trains_on_gpu", lambda device: True)  # a GPU runtime (the runs still use the CPU)
    monkeypatch.setattr(engine, "start_ray", lambda address: pytest.fail("Ray was started"))
    lines = []
    run_configs(configs(tiny_mnist), tmp_path / "r.json", summarize, Engine(str(tmp_path / "runs"), 2), log=lines.append)
    assert lines[0].endswith("2 to go (in this process)"), lines


def test_address_without_ray_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(ValueError, match="pip install -r requirements-cluster.txt"):
        engine.start_ray("127.0.0.1:6379")


def test_ray_workers_give_the_records_and_weights_of_one_process(tiny_mnist, tmp_path, local_ray):
    check_workers_1_and_2_agree(tiny_mnist, tmp_path, "ray", address=local_ray)


def test_a_task_that_raises_on_ray_is_reported_and_the_others_finish(tiny_mnist, tmp_path, local_ray):
    check_a_failure_is_reported(tiny_mnist, tmp_path, address=local_ray)


def test_a_recorded_run_is_skipped(tiny_mnist, tmp_path):
    results, lines = tmp_path / "r.json", []
    run_configs(configs(tiny_mnist)[:1], results, summarize, Engine(str(tmp_path / "runs")), log=lines.append)
    before = results.read_bytes()
    run_configs(configs(tiny_mnist), results, summarize, Engine(str(tmp_path / "runs")), log=lines.append)
    assert any(line.startswith("1 of 2 runs already in") for line in lines), lines
    runs = json.loads(results.read_text())["runs"]
    assert len(runs) == 2 and json.loads(before)["runs"][0] == runs[0]


def test_a_run_recorded_on_auto_is_not_trained_again_on_cpu(tiny_mnist, tmp_path):
    # the device says where a run trained, not what it computes: a re-run with --device cpu finds every record
    results, models, lines = tmp_path / "r.json", tmp_path / "models", []
    run_configs(configs(tiny_mnist, device="auto"), results, summarize, Engine(str(tmp_path / "runs")), models_dir=models,
                log=lines.append)
    before = {path.name: path.stat().st_mtime_ns for path in models.iterdir()}, results.read_bytes()
    run_configs(configs(tiny_mnist, device="cpu"), results, summarize, Engine(str(tmp_path / "runs")), models_dir=models,
                log=lines.append)
    assert lines[-1].startswith("2 of 2 runs already in"), lines
    assert ({path.name: path.stat().st_mtime_ns for path in models.iterdir()}, results.read_bytes()) == before


def test_a_run_killed_half_way_resumes_from_its_checkpoint(tiny_mnist, tmp_path):
    config = replace(configs(tiny_mnist)[0], epochs=8)
    whole = run_configs([config], tmp_path / "whole.json", summarize, Engine(str(tmp_path / "whole")), log=lambda line: None)
    script = ("import sys; from lab.runner import run_configs; from lab.study import summarize; from plumbing.config import Config, Engine\n"
              f"run_configs([Config(**{vars(config)!r})], {str(tmp_path / 'cut.json')!r}, summarize, "
              f"Engine({str(tmp_path / 'cut')!r}))")
    process = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env={**os.environ, **OFFLINE},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run_dir = tmp_path / "cut" / run_name(config)
    wait_until(lambda: (run_dir / "metrics.json").exists(), 120, f"the first epoch in {run_dir}")
    process.kill()  # no chance to clean up
    process.wait(timeout=30)
    assert not (tmp_path / "cut.json").exists(), "the run ended before it was killed: nothing to resume"
    lines = []
    resumed = run_configs([config], tmp_path / "cut.json", summarize, Engine(str(tmp_path / "cut")), log=lines.append)
    assert any("holds" in line and "of 8 epochs; continuing" in line for line in lines), lines
    assert without_seconds(resumed) == without_seconds(whole)


def test_resources_ask_for_a_gpu_share_only_when_training_on_a_gpu():
    assert task_resources("cpu", cuda_visible=True) == {"num_cpus": 1, "num_gpus": 0}
    assert task_resources("auto", cuda_visible=False) == {"num_cpus": 1, "num_gpus": 0}
    assert task_resources("auto", cuda_visible=True) == {"num_cpus": 1, "num_gpus": 0.25}
    assert task_resources("cuda", 0.5, cuda_visible=True) == {"num_cpus": 1, "num_gpus": 0.5}


# A two-node Ray cluster on loopback (the head and one more node, one CPU each) and a sweep joined to it by
# --address, in a process of its own (this test process has its own embedded Ray), so the code travels to the
# workers as Ray's runtime_env, as it would to another machine. While the sweep runs, the worker of its first run is
# killed once that run's first epoch is saved, and then the second node is removed once it has recorded a run.
CLUSTER = """
import json, os, signal, sys, threading, time
from pathlib import Path
from ray.cluster_utils import Cluster
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "node_ip_address": "127.0.0.1",
                                                        "include_dashboard": False})
other = cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
import ray
from lab import sweep
data, out = sys.argv[1], Path(sys.argv[2])

def wait_for(condition, what, timeout=120):
    end = time.time() + timeout
    while not condition():
        if time.time() > end:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)

def recorded():
    path = out / "r.json"
    return json.loads(path.read_text())["runs"] if path.exists() else []

def first_epoch_done(name):
    path = out / "runs" / name / "metrics.json"
    return path.exists() and json.loads(path.read_text())["epochs"]

def act():
    wait_for(lambda: first_epoch_done("gn_e4_seed0"), "the first run's first epoch")
    pid = int((out / "runs" / "gn_e4_seed0" / ".lock").read_text())  # the run's lock holds its worker's pid
    os.kill(pid, signal.SIGKILL)
    print("killed", pid, flush=True)
    wait_for(lambda: any(r.get("ray_node") == other.node_id for r in recorded()), "a run recorded by node 2")
    cluster.remove_node(other)
    print("removed node 2", flush=True)

ray.init(address=cluster.address)  # the sweep joins this cluster (start_ray sees it initialized)
actor = threading.Thread(target=act, daemon=True)
actor.start()
code = sweep.main(["--batch-sizes", "64", "--seeds", "0", "1", "--epochs", "4", "--norms", "gn", "ln",
                   "--device", "cpu", "--data-dir", data, "--out", str(out / "runs"), "--results", str(out / "r.json"),
                   "--images", str(out), "--address", cluster.address])
actor.join(timeout=60)
print(json.dumps({"code": code, "runs": [[r["variant"], r["config"]["seed"], r.get("ray_node")] for r in recorded()],
                  "head": cluster.head_node.node_id, "other": other.node_id}))
ray.shutdown()
cluster.shutdown()
"""


class FakeRay:
    """What cluster_resources reads of a cluster: its resources (a node declaring GPUs, without having one)."""

    def __init__(self, resources):
        self.resources = resources

    def cluster_resources(self):
        return self.resources


def test_gpu_shares_follow_the_clusters_gpus_not_the_drivers(monkeypatch):
    monkeypatch.setattr(engine, "start_ray", lambda address: FakeRay({"CPU": 8.0, "GPU": 2.0}))
    assert engine.cluster_resources("auto", None, "auto") == {"num_cpus": 1, "num_gpus": 0.25}  # a CPU-only driver
    assert engine.cluster_resources("cuda", 0.5, "auto") == {"num_cpus": 1, "num_gpus": 0.5}
    assert engine.cluster_resources("cpu", None, "auto") == {"num_cpus": 1, "num_gpus": 0}
    monkeypatch.setattr(engine, "start_ray", lambda address: FakeRay({"CPU": 8.0}))
    assert engine.cluster_resources("auto", None, "auto") == {"num_cpus": 1, "num_gpus": 0}
    with pytest.raises(ValueError, match="the Ray cluster at auto has no GPU"):
        engine.cluster_resources("cuda", None, "auto")


def test_the_code_travels_to_a_cluster_without_data_runs_or_results():
    for folder in ("data", "runs", "results", ".git", ".venv"):
        assert folder in engine.NOT_SHIPPED
    assert engine.REPO == ROOT and (engine.REPO / "lab" / "runner.py").exists()


def test_a_sweep_on_a_two_node_cluster_survives_a_killed_worker_and_a_removed_node(tiny_mnist, tmp_path):
    pytest.importorskip("ray")
    result = subprocess.run([sys.executable, "-c", CLUSTER, str(tiny_mnist), str(tmp_path)], cwd=ROOT,
                            env={**os.environ, **OFFLINE}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines, summary = result.stdout.splitlines(), json.loads(result.stdout.splitlines()[-1])
    assert summary["code"] == 0 and any(line.startswith("killed ") for line in lines) and "removed node 2" in lines
    assert sorted((v, s) for v, s, _ in summary["runs"]) == [("GN", 0), ("GN", 1), ("LN", 0), ("LN", 1)]  # once each
    assert {node for *_, node in summary["runs"]} == {summary["head"], summary["other"]}  # both nodes trained runs
    killed = json.loads((tmp_path / "runs" / "gn_e4_seed0" / "metrics.json").read_text())
    assert [row["epoch"] for row in killed["epochs"]] == [1, 2, 3, 4]  # resumed from its checkpoint, no epoch twice


def children(pid):
    """The pids of a process's children (Linux)."""
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def alive(pid):
    """Whether a process exists and is not a zombie (Linux)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_ctrl_c_keeps_finished_runs_and_a_second_start_skips_them(tiny_mnist, tmp_path):
    sig = signal.SIGINT  # Ctrl-C; SIGTERM takes the same path, tested end to end on one run in test_main
    args = ["--norm", "all", "--seeds", "0", "1", "2", "--epochs", "1", "--train-subset", "20000", "--workers", "2",
            "--data-dir", tiny_mnist, "--out", tmp_path / "R", "--results", tmp_path / "S", "--images", tmp_path / "I",
            "--device", "cpu"]
    process = start_main(*args, cwd=tmp_path)
    results = tmp_path / "S" / "study.json"
    try:
        wait_until(lambda: results.exists() and json.loads(results.read_text())["runs"], 600, f"a run in {results}",
                   process)
        workers = children(process.pid)
        process.send_signal(sig)
        _, stderr = process.communicate(timeout=120)
        assert len(workers) == 2 and not [pid for pid in workers if alive(pid)], "a worker outlived its driver"
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


def test_ctrl_c_in_a_terminal_ends_the_command_at_once_though_runs_are_queued(tiny_mnist, tmp_path):
    # a terminal's Ctrl-C reaches the driver and its workers; a worker's run turns it into a stop request, and the
    # pool has a run queued beyond the two training: the driver must end the workers, not wait for that run
    args = ["--norm", "all", "--seeds", "0", "1", "--epochs", "400", "--workers", "2", "--data-dir", tiny_mnist,
            "--out", tmp_path / "R", "--results", tmp_path / "S", "--images", tmp_path / "I", "--device", "cpu"]
    process = start_main(*args, cwd=tmp_path, session=True)
    try:
        wait_until(lambda: len(list((tmp_path / "R").glob("*/metrics.json"))) == 2, 120, "two runs' first epoch",
                   process)
        workers = children(process.pid)
        os.killpg(process.pid, signal.SIGINT)
        _, stderr = process.communicate(timeout=30)  # a queued run of 400 epochs would take minutes
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130, stderr
    assert len(workers) == 2 and not [pid for pid in workers if alive(pid)], "a worker outlived its driver"


def test_a_diverged_run_is_recorded_not_failed(tiny_mnist, tmp_path):
    diverging = replace(configs(tiny_mnist)[0], lr=1e30)
    runs = run_configs([diverging], tmp_path / "r.json", summarize, Engine(str(tmp_path / "runs")), models_dir=tmp_path / "models",
                       log=lambda line: None)
    [run] = runs
    assert run["diverged"]["epoch"] == 1 and run["epochs"] == [] and run["params"] == 7410 and run["node"]
    assert summarize(runs)["GN"]["diverged"][0]["seed"] == 0 and not (tmp_path / "models").exists()


def test_the_continue_command_repeats_a_module_run_as_typed(monkeypatch):
    from lab.runner import continue_command
    module = type(sys)("__main__")
    module.__spec__ = type("Spec", (), {"name": "lab.guide"})()
    monkeypatch.setitem(sys.modules, "__main__", module)
    monkeypatch.setattr(sys, "argv", ["/repo/lab/guide.py", "--seeds", "0"])
    assert continue_command() == "python -m lab.guide --seeds 0"
    module.__spec__ = None  # a script: python main.py ...
    monkeypatch.setattr(sys, "argv", ["main.py", "--norm", "all"])
    assert continue_command() == "python main.py --norm all"
