"""Many runs, one record each: train a list of configs and record each result as it finishes.

Every experiment (the study, the batch-size sweep, the LR-range study, the guide, ...) defines its configs and its
summary and hands them to `run_configs`. Each config becomes one `lab.train.fit` run in its own folder under `out`;
a run that was interrupted resumes from its checkpoint when its folder is visible to the worker. The process that
called `run_configs` (the driver) alone writes the results file, once per finished run, so no file is shared
between processes or machines; runs already in the file are skipped, so the same command continues after a stop.
Where the runs train (this process, worker processes, a Ray cluster) is lab/engine.py's job. A bar counts the
epochs to train; workers report each finished epoch to the driver (Ray: each finished run).
"""
import json
import shlex
import sys
from contextlib import closing
from dataclasses import asdict, replace
from functools import lru_cache
from pathlib import Path

import torch
from tqdm import tqdm

from lab.engine import PLACES, cluster_resources, map_tasks, placement, report_progress, terminate_as_interrupt
from lab.train import WriteFailed, fit, get_device, where_it_runs
from model import Net, count_parameters
from plumbing.config import Engine, config_from_record, run_label, run_name
from plumbing.data import DataError, ensure_mnist, ensure_mnist_on_this_node, load_mnist
from plumbing.results import find_run, load_results, model_path, record
from plumbing.run_folder import continue_or_new_run_dir
from plumbing.system import RunFolderError, WriteError, exclusive, keep_freed_memory, save_torch
from utils import Interrupted, NonFiniteLoss


class RunsFailed(Exception):
    """Some runs failed; every other run finished and is recorded. `failures`: [(run name, error)]."""

    def __init__(self, failures):
        self.failures = failures
        super().__init__(f"{len(failures)} run(s) failed: " + "; ".join(f"{n}: {e}" for n, e in failures))


# ---- saved weights ------------------------------------------------------------------------------
def load_model(path, config):
    """The Net of a run's `config` (a dict) with the weights saved at `path`, in eval mode on the CPU."""
    if not Path(path).exists():
        raise FileNotFoundError(f"{path} is missing: the figures need the saved weights of the first seed of each "
                                f"variant (see README: the study at batch 64)")
    return net_with_weights(torch.load(path, map_location="cpu", weights_only=True), config)


def net_with_weights(state, config):
    """The Net of a run's `config` (a dict) holding the weights `state`, in eval mode."""
    model = Net.from_config(config)
    model.load_state_dict(state)
    return model.eval()


# ---- one run: what a worker does ----------------------------------------------------------------
@lru_cache(maxsize=2)
def cached_splits(data_dir, device, val_split, train_subset):
    """MNIST on the device, loaded once per worker process for every run that uses the same split."""
    if torch.device(device).type == "cpu":
        keep_freed_memory()  # process-wide: faster CPU steps, same arithmetic (see system.py)
    ensure_mnist_on_this_node(data_dir)  # on a cluster: checked (or downloaded once) on every node
    return load_mnist(data_dir, torch.device(device), val_split, train_subset)


def train_one(config, out, measure=None):
    """Fit `config` in out/run_name(config) with one torch thread; returns (run record, final weights).

    A run whose loss stops being finite comes back as a record of its finished epochs with
    "diverged": {"epoch", "step"}, instead of an error. `measure(model, splits, config)` adds
    metrics to the last epoch before the run's last write (e.g. BN with other statistics). Its lines and
    finished epochs go to the driver through report_progress.
    """
    torch.set_num_threads(1)
    device = get_device(config.device)
    splits = cached_splits(config.data_dir, str(device), config.val_split, config.train_subset)
    name = run_name(config)
    run_dir = continue_or_new_run_dir(out, name, config)
    try:
        metrics, model = fit(config, splits, run_dir, label=name, progress=False, final_metrics=measure,
                             log=lambda line: report_progress(("line", name, line)),
                             on_epoch=lambda row: report_progress(("epoch", name, row["epoch"])))
    except NonFiniteLoss as error:
        metrics = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").exists() \
            else {"config": asdict(config), "params": count_parameters(Net.from_config(config)),
                  **where_it_runs(device), "epochs": []}  # it diverged in its first epoch
        metrics["diverged"] = {"epoch": error.epoch, "step": error.step}
        return results_record(config, metrics), None
    return results_record(config, metrics), {k: v.cpu() for k, v in model.state_dict().items()}


def ray_node_id():
    """The Ray node this code runs on when it runs as a Ray task; None elsewhere (the driver, no Ray)."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized() or ray.get_runtime_context().get_task_id() is None:
        return None
    return ray.get_runtime_context().get_node_id()


def results_record(config, metrics):
    """The run as the results file keeps it: its variant, config (without the machine's data folder), metrics."""
    record = {"variant": run_label(config), **metrics}
    record["config"] = {k: v for k, v in record["config"].items() if k != "data_dir"}
    if ray_node_id() is not None:
        record["ray_node"] = ray_node_id()  # which node of a cluster trained it
    return record


def run_configs(configs, results, summarize, engine=Engine(), measure=None, models_dir=None, order=None, log=print):
    """Train every config not yet recorded in `results`, recording each run as soon as it finishes.

    `engine` (config.Engine) says where the run folders go and how the runs are spread: `workers` at a
    time, on the Ray cluster at `address` if given, each with `gpus_per_run` of a GPU there.

    `summarize(runs)` writes the file's summary; `models_dir` keeps each run's final weights as
    models_dir/<run name>.pt; `order(run)` sorts the runs in the file. A run whose loss stopped being
    finite is recorded too, with "diverged" (no weights are kept): it is a result, not a failure. A bar counts
    the epochs to train; `log` gets every run's epoch lines and a line per finished run. Raises RunsFailed at
    the end if any run failed, and Interrupted (with every finished run recorded) on Ctrl-C. Returns the
    recorded runs.
    """
    if order is None:  # the configs' own order, whatever order the runs finish in
        position = {run_name(c): i for i, c in enumerate(configs)}
        order = lambda run: position.get(run_name(config_from_record(run["config"])), len(position))  # noqa: E731
    shown = Path(results)  # as given, in messages; absolute for the workers (and the same path on every node)
    results, out = Path(results).absolute(), str(Path(engine.out).absolute())
    configs = [replace(c, data_dir=str(Path(c.data_dir).absolute())) for c in configs]  # not part of a run's identity
    results.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(results.with_name(f".{results.name}.lock"), f"the results file {results}"):
        runs = load_results(results)["runs"]
        todo = [c for c in configs if not find_run(runs, c)]
        if not todo:
            log(f"{len(configs)} of {len(configs)} runs already in {shown}: nothing to train")
            return runs
        on_gpu = not engine.address and trains_on_gpu(todo[0].device)  # a cluster's nodes have their own devices
        place = placement(engine.workers, engine.address, on_gpu)
        done = len(configs) - len(todo)
        log(f"{done} of {len(configs)} runs already in {shown}; {len(todo)} to go ({PLACES[place]})")
        with EpochBar(todo, log) as bar:
            return _train_and_record(todo, out, on_gpu, engine, results, summarize, measure, models_dir, order, bar)


def _train_and_record(todo, out, on_gpu, engine, results, summarize, measure, models_dir, order, bar):
    """run_configs' loop: every config of `todo` trained, each recorded as it finishes."""
    runs, failures = load_results(results)["runs"], []
    resources = cluster_resources(todo[0].device, engine.gpus_per_run, engine.address) if engine.address else None
    stream = map_tasks(train_one, [(config, out, measure) for config in todo], engine.workers, engine.address,
                       on_gpu, resources, on_progress=bar.progress)
    with closing(stream):  # stops the rest now
        for (config, *_), result, error in stream:
            run, weights = result or (None, None)
            if error is not None:
                failures.append((run_name(config), error))
                bar.write(f"FAILED: {run_name(config)}: {error}")
            else:
                if models_dir is not None and weights is not None:  # first: a recorded run always has weights
                    Path(models_dir).mkdir(parents=True, exist_ok=True)
                    save_torch(weights, model_path(models_dir, config))
                runs = record(results, run, summarize, order)
                bar.write(done_line(config, run))
            bar.run_done(config)
    if failures:
        raise RunsFailed(failures)
    return runs


def trains_on_gpu(device):
    """Whether runs on `device` ('auto', 'cpu', 'cuda', 'mps') train on this machine's GPU."""
    return get_device(device).type != "cpu"


class EpochBar:
    """One bar over every epoch to train, moved by each run's finished epochs (reported by report_progress from
    any worker) and, at a run's end, by the epochs it did not report (resumed from a checkpoint, or never
    trained after it diverged); every line goes above it."""

    def __init__(self, todo, log):
        self.epochs = {run_name(c): c.epochs for c in todo}
        self.reported = dict.fromkeys(self.epochs, 0)
        self.bar = tqdm(total=sum(self.epochs.values()), unit="epoch", desc="epochs", dynamic_ncols=True)
        self.write = self.bar.write if log is print else log

    def progress(self, message):
        kind, name, value = message
        if kind == "line":
            self.write(value)
        elif name in self.reported:
            self.reported[name] += 1
            self.bar.set_postfix_str(f"{name} epoch {value}", refresh=False)
            self.bar.update()

    def run_done(self, config):
        name = run_name(config)
        self.bar.update(self.epochs[name] - self.reported[name])
        self.reported[name] = self.epochs[name]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.bar.close()


def done_line(config, run):
    """One line per finished run."""
    if "diverged" in run:
        return f"done: {run_name(config)}, diverged in epoch {run['diverged']['epoch']}"
    last = run["epochs"][-1]
    seconds = sum(row["seconds"] for row in run["epochs"])
    took = f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
    return f"done: {run_name(config)}, test acc {last['test_acc']:.2f}%, {took} of training and testing"


def continue_command():
    """The command line that started this program: running it again continues where it stopped (`python -m
    lab.guide ...` as it was typed, not the module's file path, which would not import as a script)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    program = ["-m", spec.name] if spec is not None and spec.name != "__main__" else sys.argv[:1]
    return shlex.join(["python", *program, *sys.argv[1:]])


def run_command(run, results, data_dir, device, address=None):
    """Check the device and the data here, call `run()` (which calls run_configs), and turn its errors into an
    exit code. With a cluster `address` the nodes check both for themselves (the driver may have no GPU, and
    no data: it writes only the results)."""
    try:
        if not address:
            get_device(device)
            ensure_mnist(data_dir)  # downloaded once, here, before any worker needs it
        with terminate_as_interrupt():
            run()
    except ValueError as error:  # an unusable --device
        print(f"error: {error}", file=sys.stderr)
        return 2
    except RunsFailed as error:
        print(f"error: {len(error.failures)} run(s) failed; every other run is recorded in {results}:\n"
              + "\n".join(f"  {name}: {message}" for name, message in error.failures)
              + f"\nFix the cause, then run the same command again: {continue_command()}", file=sys.stderr)
        return 1
    except (Interrupted, KeyboardInterrupt):
        print(f"\ninterrupted; every finished run is recorded in {results}, and an unfinished one resumes from "
              f"its last epoch. Continue with: {continue_command()}", file=sys.stderr)
        return 130
    except (DataError, RunFolderError, WriteError, WriteFailed) as error:
        print(f"error: {error}", file=sys.stderr)
        return 4 if isinstance(error, (WriteError, WriteFailed)) else 1
    return 0
