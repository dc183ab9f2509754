"""Many runs, one engine: train a list of configs, in this process, in worker processes or on a Ray cluster, and
record each result.

Every experiment (the study, the batch-size sweep, the LR-range study, ...) defines its configs and
its summary and hands them to `run_configs`. Each config becomes one `utils.fit` run in its own
folder under `out`; a run that was interrupted resumes from its checkpoint when its folder is
visible to the worker. The process that called `run_configs` (the driver) alone writes the results
file, once per finished run, so no file is shared between processes or machines; runs already in
the file are skipped, so the same command continues after a stop.

    workers=1, or a GPU     the runs one after another in this process (a GPU is never shared by forking)
    workers=N on CPUs       N worker processes: forked from this one on Linux (they start with its imports, so a
                            worker's first run starts at once), spawned where fork is unsafe (macOS, Windows)
    address="auto" or ADDR  an existing Ray cluster (`ray start --head` ...), every node's CPUs and GPUs; the only
                            place Ray is used (pip install -r requirements-cluster.txt)

Every run uses one torch thread whatever the number of workers, so the numbers don't depend on it. A bar counts
the epochs to train; workers report each finished epoch to the driver through a queue (Ray: each finished run).
"""
import json
import multiprocessing
import shlex
import signal
import threading
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, replace
import sys
from contextlib import closing, contextmanager
from functools import lru_cache
from pathlib import Path
from queue import Empty

import torch
from tqdm import tqdm

from plumbing.config import Engine, config_from_record, run_label, run_name
from plumbing.data import DataError, ensure_mnist, ensure_mnist_on_this_node, load_mnist
from plumbing.system import RunFolderError, WriteError, exclusive, keep_freed_memory, save_torch
from model import Net, count_parameters
from plumbing.results import find_run, load_results, model_path, record
from plumbing.run_folder import continue_or_new_run_dir
from lab.train import WriteFailed, fit, get_device, where_it_runs
from utils import Interrupted, NonFiniteLoss

MAX_RETRIES = 2  # a task whose worker or node died is started again this often before it counts as failed
REPO = Path(__file__).resolve().parents[1]  # the repo root: what a cluster gets (runtime_env)
# what a cluster's workers get of the repo (Ray's runtime_env working_dir): the code, not data, runs or results
NOT_SHIPPED = [".git", ".venv", "venv", "data", "runs", "results", "images", "docs", "shared", "*.ipynb",
               "__pycache__", ".pytest_cache", ".ipynb_checkpoints"]


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


# ---- the engine ------------------------------------------------------------------------------------
def task_resources(device, gpus_per_run=None, cuda_visible=None):
    """Ray resources of one run on a cluster: one CPU, and a share of a GPU when the runs train on one.

    Ray hides the GPUs from a task that asks for none, so with --device cuda or auto and a GPU
    in sight (`cuda_visible`: the cluster has one) every run asks for `gpus_per_run` of one
    (default 0.25: four small runs per GPU).
    """
    cuda_visible = torch.cuda.is_available() if cuda_visible is None else cuda_visible
    wants_gpu = device == "cuda" or (device == "auto" and cuda_visible)
    if not wants_gpu:
        return {"num_cpus": 1, "num_gpus": 0}
    return {"num_cpus": 1, "num_gpus": 0.25 if gpus_per_run is None else gpus_per_run}


def cluster_resources(device, gpus_per_run, address):
    """task_resources from the GPUs the Ray cluster has (not the driver's), joining it; ValueError for --device
    cuda on a cluster without a GPU."""
    ray = start_ray(address)
    gpus = ray.cluster_resources().get("GPU", 0)
    if device == "cuda" and not gpus:
        raise ValueError(f"--device cuda was asked for, but the Ray cluster at {address} has no GPU; use --device "
                         f"auto or --device cpu")
    return task_resources(device, gpus_per_run, cuda_visible=gpus > 0)


RAY_INSTALL = "pip install -r requirements-cluster.txt"


def start_ray(address):
    """Join the Ray cluster at `address` (or the Ray this process already joined); returns the ray module."""
    try:
        import ray  # imported only here: nothing but a cluster needs it
    except ImportError:
        raise ValueError(f"--address {address} runs on a Ray cluster, and Ray is not installed here: {RAY_INSTALL}")
    if ray.is_initialized():
        return ray
    ray.init(address=address, log_to_driver=False, logging_level="warning",  # the code travels to the workers
             runtime_env={"working_dir": str(REPO), "excludes": NOT_SHIPPED})
    if _INTERRUPT_ON_TERMINATE:
        signal.signal(signal.SIGTERM, _interrupt)  # ray.init installs a handler of its own
    return ray


def placement(workers, address=None, on_gpu=False):
    """Where map_tasks runs the tasks: 'ray' (the cluster at `address`), 'here' (one after another in this
    process: one worker, or runs on this machine's GPU, which forked processes must not share), 'forked'
    (`workers` processes forked from this one) or 'spawned' (fresh processes, where fork is unsafe)."""
    if address:
        return "ray"
    if workers == 1 or on_gpu:
        return "here"
    return "forked" if fork_is_safe() else "spawned"


def fork_is_safe():
    """Linux, and no CUDA context in this process yet (a forked child cannot use its parent's)."""
    return sys.platform.startswith("linux") and not torch.cuda.is_initialized()


PLACES = {"here": "in this process", "forked": "in forked processes", "spawned": "in worker processes",
          "ray": "on Ray"}


def map_tasks(function, items, workers=1, address=None, on_gpu=False, resources=None, on_progress=None):
    """Yield (item, result, error) for `function(*item)` over `items`, as each finishes.

    Where the calls run is placement(workers, address, on_gpu); each uses one torch thread. An
    exception in `function` is returned as `error` (a line of text) and the others go on. A task whose
    worker (or node) died is started again, MAX_RETRIES times. Interrupted (Ctrl-C in a run in this
    process) stops everything; Ctrl-C or an error in this process ends the workers' tasks too.
    `on_progress(message)` receives, in this process, what a task passes to `report_progress` (not on Ray).
    """
    if not items:
        return
    place = placement(workers, address, on_gpu)
    if place == "here":
        yield from _in_process(function, items, on_progress)
    elif place == "ray":
        yield from _on_ray(function, items, address, resources or {"num_cpus": 1})
    else:
        yield from _in_worker_processes(function, items, workers, place == "forked", on_progress)


_progress_sink = None  # where report_progress sends: on_progress here, a queue to the driver in a worker process


def report_progress(message):
    """Send `message` (small, picklable) to the driver's on_progress, wherever this task runs (not on Ray)."""
    if _progress_sink is not None:
        _progress_sink(message)


@contextmanager
def _progress_to(sink):
    global _progress_sink
    previous, _progress_sink = _progress_sink, sink
    try:
        yield
    finally:
        _progress_sink = previous


def _in_process(function, items, on_progress):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with _progress_to(on_progress):
            for item in items:
                yield item, *_reported(function, item)
    finally:
        torch.set_num_threads(threads)


def _in_worker_processes(function, items, workers, fork, on_progress):
    """map_tasks in `workers` processes. Forked ones inherit this process's imported modules (and anything it
    loaded), so they start in milliseconds; spawned ones import what they need first. A task's numbers are the
    same as in this process. The processes ignore Ctrl-C: this one ends them."""
    context = multiprocessing.get_context("fork" if fork else "spawn")
    progress = context.Queue()
    todo = list(items)
    for attempt in range(MAX_RETRIES + 1):
        died = []  # a dead worker breaks the pool: every task not finished is started again in a new one
        with _worker_pool(workers, context, progress) as pool:
            pending = {pool.submit(_reported, function, item): item for item in todo}
            while pending:
                done, _ = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                _drain(progress, on_progress)
                for future in done:
                    item = pending.pop(future)
                    try:
                        result, error = future.result()
                    except BrokenProcessPool as broken:
                        if attempt < MAX_RETRIES:
                            died.append(item)
                            continue
                        result, error = None, f"a worker process died ({broken})"
                    yield item, result, error
        if not died:
            return
        todo = died


def _drain(queue, on_progress):
    """Hand every message the workers have sent so far to on_progress."""
    while True:
        try:
            message = queue.get_nowait()
        except Empty:
            return
        if on_progress is not None:
            on_progress(message)


@contextmanager
def _worker_pool(workers, context, progress):
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_as_a_worker, initargs=(progress,))
    try:
        yield pool
    except BaseException:  # Ctrl-C, an error here, or the caller stopped reading: end the tasks still going
        pool.shutdown(wait=False, cancel_futures=True)
        for process in multiprocessing.active_children():  # the pool's (the runner starts no other)
            process.terminate()
        raise
    finally:
        pool.shutdown(wait=True)


def _as_a_worker(progress):
    """A worker process: one torch thread; progress goes to the driver's queue; Ctrl-C goes to the driver, which
    ends it (SIGTERM: at once)."""
    global _progress_sink
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    torch.set_num_threads(1)
    _progress_sink = progress.put


def _reported(function, item):
    """(function(*item), None), or (None, the error as a line of text): a failed task is reported, the others go
    on. Interrupted (Ctrl-C in this process) is raised: it stops everything."""
    try:
        return function(*item), None
    except Interrupted:
        raise
    except Exception as error:
        return None, f"{type(error).__name__}: {error}"


def _on_ray(function, items, address, resources):
    ray = start_ray(address)
    remote = ray.remote(function).options(**resources, max_retries=MAX_RETRIES, retry_exceptions=False)
    pending = {remote.remote(*item): item for item in items}
    try:
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            item = pending.pop(ref)
            try:
                yield item, ray.get(ref), None
            except ray.exceptions.RayError as error:
                cause = getattr(error, "cause", None) or error
                yield item, None, f"{type(cause).__name__}: {str(cause).strip().splitlines()[-1]}"
    finally:
        if pending:  # Ctrl-C or an error in the driver: end this driver's Ray job, and with it the runs still going
            ray.shutdown()  # (force-cancelling each task instead raced with their replies and aborted Ray 2.60)


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
        log(f"{len(configs) - len(todo)} of {len(configs)} runs already in {shown}; {len(todo)} to go ({PLACES[place]})")
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
    """The command line that started this program: running it again continues where it stopped."""
    return shlex.join(["python", *sys.argv])


_INTERRUPT_ON_TERMINATE = []  # non-empty within terminate_as_interrupt(): start_ray puts the handler back


def _interrupt(signum, frame):
    raise KeyboardInterrupt


@contextmanager
def terminate_as_interrupt():
    """Within the block, SIGTERM (`kill`, a scheduler's stop) ends the driver as Ctrl-C does: every finished
    run stays recorded and the message says how to continue (in the main thread; elsewhere nothing changes).
    ray.init installs a handler of its own that kills the process, so start_ray installs this one again."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    _INTERRUPT_ON_TERMINATE.append(True)
    try:
        yield
    finally:
        _INTERRUPT_ON_TERMINATE.pop()
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)  # None: set outside Python


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
