"""Where the runs of a list train, one engine for every experiment: in this process, in worker processes (forked
from this one on Linux, spawned where fork is unsafe) or as Ray tasks on a cluster (`--address`, the only use of
Ray); each task's progress reaches the driver through report_progress; Ctrl-C and SIGTERM stop every worker.
`lab/runner.py` decides what to train and records it; this module places the calls and collects their results.
"""
import multiprocessing
import signal
import sys
import threading
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from pathlib import Path
from queue import Empty

import torch

from utils import Interrupted

MAX_RETRIES = 2  # a task whose worker or node died is started again this often before it counts as failed
REPO = Path(__file__).resolve().parents[1]  # the repo root: what a cluster gets (runtime_env)
# what a cluster's workers get of the repo (Ray's runtime_env working_dir): the code, not data, runs or results
NOT_SHIPPED = [".git", ".venv", "venv", "data", "runs", "results", "images", "docs", "shared", "*.ipynb",
               "__pycache__", ".pytest_cache", ".ipynb_checkpoints"]


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
            # SIGKILL, not SIGTERM: inside a run a signal is only a stop request (system.stop_requests), and the
            # worker would go on to a run already queued for it; its run folder keeps the last finished epoch
            process.kill()
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


# ---- signals ---------------------------------------------------------------------------------------
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
