"""Speed, one job per command: the data pipelines, what each norm costs, and the runner's speed-up.

    python bench.py pipelines --device cpu --data-dir DIR                        # full measurement
    python bench.py pipelines --quick --device cpu --data-dir DIR                # about a minute on 2 cores
    python bench.py pipelines --lever channels_last --device cpu --data-dir DIR  # try one speed lever
    python bench.py norms --device cpu        # BN, GN, LN at every batch size; inference with BN folded
    python bench.py workers --data-dir DIR    # short study runs with the runner at --workers 1 and 2
    python bench.py command --data-dir DIR    # python main.py --norm all from a cold start, --workers 1 and 2
    python bench.py notebook --data-dir DIR   # Run all of the notebook, its defaults, in a fresh clone

`pipelines`: this repo's device-resident pipeline vs. the classic per-image DataLoader, side by side.
Every pipeline trains the same model with the same batch size and optimizer on the same device:
  ours     this repo's pipeline (data on the device, batched augmentation);
  model    the same training step on one fixed batch, with no data pipeline at all: the floor no
           data pipeline can beat, so classic/model bounds the ratio that any pipeline could reach;
  classic  torchvision MNIST, per-image PIL transforms and a DataLoader, as the typical solutions do.
All three live in one process and take turns, round after round (a block of training steps and a
test pass each, the order rotating), so a drift in the machine's speed hits them alike; times are
medians over rounds (CUDA events on a GPU) and the ratio is the median of the per-round ratios.
Peak memory comes from a fresh process per pipeline. `--lever` applies one speed setting to ours and
model (classic stays as published); `--norm` picks the model's normalization (BN by default). On a
CPU the process uses this repo's allocator setting (system.keep_freed_memory), classic included, since
it is process-wide; `--malloc default` measures without it. Writes
results/bench_<device>[_<norm>][_<lever>][_malloc_default].json (parts only when not the default).

`norms`: BN, GN and LN at every batch size the experiments compare (config.BATCH_SIZES), a training
step and an inference pass on one fixed batch, the norms taking turns (results/bench_<device>_norms.json);
then inference of BN, BN folded into its convs (torch's fuse_conv_bn_eval), GN and LN at batch 1, 64 and
1000, side by side (results/bench_<device>_inference.json).

`workers`: the same short study runs (the study's three variants, seeds 0 and 1, 1 epoch on 20,000
images) with the runner at --workers 1 and on two Ray workers (Ray started first: a Ray in the process takes
the runs), in alternating rounds, and Ray's start-up on its own (results/bench_cpu_workers.json). It
measures the runner, not the model.

`command`: the whole `python main.py --norm all` from a cold start (the workers' start, their imports and
MNIST loads, the figures after the runs) at --workers 1 and 2, alternating rounds, each a fresh process
(results/bench_cpu_command_e<epochs>_n<train subset>[_<label>].json).

`notebook`: Run all of S5_Normalization.ipynb with its defaults (the assignment's three runs, 20 epochs on all
60,000 images) in a fresh clone, wall time from the kernel's start (results/bench_cpu_notebook.json).

Every timer takes its turn through `round_robin`; every file is written atomically (system.save_json).
"""
import argparse
import json
import math
import multiprocessing
import os
import platform
import resource
import statistics
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode
from torchvision import datasets, transforms

from plumbing.cli import DATA_DIR_HELP
from plumbing.config import BATCH_SIZES, COMPARED, RESULTS_DIR, TRAIN_IMAGES, Config, Engine, bench_file
from plumbing.data import MNIST_MEAN, MNIST_STD, DeviceLoader, default_data_dir, eval_batch_size, load_mnist
from model import NORMS, Net
from plumbing.system import cpu_name, keep_freed_memory, save_json

PIPELINES = ("ours", "model", "classic")
LEVERS = ("none", "channels_last", "compile", "one_thread", "bf16")
THREADS = torch.get_num_threads()  # torch's default for this machine


@dataclass(frozen=True)
class Spec:
    """What building a pipeline needs; a fresh process (peak memory) receives it whole."""
    device: str
    data_dir: str
    batch_size: int
    norm: str
    lever: str
    warmup: int
    classic_workers: int
    malloc: str


@contextmanager
def timed(device, times):
    """Append the seconds the block took to `times`; CUDA events on a GPU."""
    if device.type == "cuda":
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        yield
        end.record()
        torch.cuda.synchronize()
        times.append(begin.elapsed_time(end) / 1000)
    else:
        start = time.perf_counter()
        yield
        times.append(time.perf_counter() - start)


def round_robin(names, rounds):
    """(round, names in this round's order) for each round: the order rotates by one from round to round,
    so a drift in the machine's speed hits every name alike. The one turn-taking rule of every benchmark."""
    names = list(names)
    for round_ in range(rounds):
        yield round_, names[round_ % len(names):] + names[:round_ % len(names)]


def ours(data_dir, batch_size, device):
    """(train batches, test batches) of this repo: tensors on the device, batched augmentation."""
    c = Config()
    splits = load_mnist(data_dir, device)
    train = DeviceLoader(*splits["train"], batch_size, shuffle=True, degrees=c.degrees, shift=c.shift)
    return batches(train, device), DeviceLoader(*splits["test"], eval_batch_size(device))


def model_only(data_dir, batch_size, device):
    """One batch of ours for training and one for testing, repeated: no data pipeline at all."""
    train, test = ours(data_dir, batch_size, device)
    x_test, y_test = next(iter(test))
    return repeat(next(train)), [(x_test, y_test)] * len(test)


def classic(data_dir, batch_size, device, workers):
    """The published solutions' way: torchvision MNIST, per-image PIL transforms, a DataLoader."""
    normalize = [transforms.ToTensor(), transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))]
    train_set = datasets.MNIST(data_dir, train=True, download=True, transform=transforms.Compose(
        [transforms.RandomRotation((-7.0, 7.0), fill=(0,)), *normalize]))
    test_set = datasets.MNIST(data_dir, train=False, transform=transforms.Compose(normalize))
    kw = {"batch_size": batch_size, "num_workers": workers, "pin_memory": device.type == "cuda"}
    return (batches(torch.utils.data.DataLoader(train_set, shuffle=True, **kw), device),
            torch.utils.data.DataLoader(test_set, shuffle=False, **kw))


def batches(loader, device):
    """Endless (x, y) on `device`, as a training loop would consume them."""
    while True:
        for x, y in loader:
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)


@dataclass
class Pipeline:
    """One pipeline, ready to time: its data, its own model and optimizer, and its speed settings."""
    stream: object
    test_loader: object
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    autocast: object = nullcontext
    threads: int = THREADS
    warmup_s: float = 0.0

    def train_steps(self, steps):
        torch.set_num_threads(self.threads)
        self.model.train()
        for _ in range(steps):
            x, y = next(self.stream)
            with self.autocast():
                loss = F.cross_entropy(self.model(x), y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()

    @torch.no_grad()
    def test_pass(self):
        torch.set_num_threads(self.threads)
        self.model.eval()
        device = next(self.model.parameters()).device
        correct = torch.zeros((), dtype=torch.long, device=device)
        for x, y in self.test_loader:
            with self.autocast():
                correct += (self.model(x.to(device)).argmax(1) == y.to(device)).sum()
        return correct.item()


def make_pipeline(name, spec):
    """The named pipeline with `spec.lever` applied (to ours and model only), warmed up."""
    torch.manual_seed(0)
    device = torch.device(spec.device)
    if name == "classic":
        stream, test_loader = classic(spec.data_dir, spec.batch_size, device, spec.classic_workers)
    else:
        stream, test_loader = {"ours": ours, "model": model_only}[name](spec.data_dir, spec.batch_size, device)
    model, lever = Net(spec.norm).to(device), spec.lever if name != "classic" else "none"
    pipeline = Pipeline(stream, test_loader, model, torch.optim.Adam(model.parameters(), lr=1e-3))
    if lever == "one_thread":
        pipeline.threads = 1
    elif lever == "channels_last":
        pipeline.model = model.to(memory_format=torch.channels_last)
    elif lever == "compile":
        pipeline.model = torch.compile(model)
    elif lever == "bf16":
        pipeline.autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    start = time.perf_counter()
    pipeline.train_steps(spec.warmup)
    pipeline.test_pass()
    pipeline.warmup_s = time.perf_counter() - start
    return pipeline


def set_allocator(spec):
    """This repo's CPU allocator setting, process-wide, so every pipeline gets it (see system.py)."""
    if spec.malloc == "keep" and spec.device == "cpu":
        keep_freed_memory()


def peak_memory(name, spec):
    """Runs in a fresh process: peak memory (MB) of warming one pipeline up and one more test pass."""
    set_allocator(spec)
    make_pipeline(name, spec).test_pass()
    peak = (torch.cuda.max_memory_allocated() if spec.device == "cuda" else
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return peak / 2**20


def time_rounds(pipelines, rounds, steps, device):
    """{name: {'train_times_s': [...], 'test_times_s': [...], 'warmup_s'}}, one time per round each."""
    times = {name: {"train_times_s": [], "test_times_s": [], "warmup_s": p.warmup_s}
             for name, p in pipelines.items()}
    for _, names in round_robin(pipelines, rounds):
        for name in names:
            with timed(device, times[name]["train_times_s"]):
                pipelines[name].train_steps(steps)
            with timed(device, times[name]["test_times_s"]):
                pipelines[name].test_pass()
    torch.set_num_threads(THREADS)
    return times


def epoch_seconds(train_step_block_s, test_pass_s, steps, batch_size):
    """(train s/epoch, test s/pass): a block of `steps` training steps scaled to the full 60k."""
    return train_step_block_s / steps * math.ceil(TRAIN_IMAGES / batch_size), test_pass_s


def summarize(times, steps, batch_size):
    """Per pipeline: epoch, train and test times (medians over rounds), images/s, and the raw times."""
    results = {}
    for name, t in times.items():
        train_epoch_s, test_pass_s = epoch_seconds(statistics.median(t["train_times_s"]),
                                                   statistics.median(t["test_times_s"]), steps, batch_size)
        results[name] = {"train_epoch_s": train_epoch_s, "test_pass_s": test_pass_s,
                         "epoch_s": train_epoch_s + test_pass_s,
                         "train_images_per_s": steps * batch_size / statistics.median(t["train_times_s"]),
                         **t}
    return results


def ratios(times, steps, batch_size, slower, faster):
    """Per round: epoch time (train + test) of `slower` / that of `faster`."""
    def epoch(name, i):
        return sum(epoch_seconds(times[name]["train_times_s"][i], times[name]["test_times_s"][i],
                                 steps, batch_size))
    return [epoch(slower, i) / epoch(faster, i) for i in range(len(times[slower]["train_times_s"]))]


# ---- what each norm costs ----------------------------------------------------------
def step_and_inference_times(model, optimizer, x, y, steps, device):
    """(seconds per training step, seconds per inference batch) of `model` on one fixed batch."""
    train_times, infer_times = [], []
    model.train()
    with timed(device, train_times):
        for _ in range(steps):
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad(), timed(device, infer_times):
        for _ in range(steps):
            model(x)
    return train_times[0] / steps, infer_times[0] / steps


def norm_costs(device, norms, batch_sizes, rounds, images_per_block):
    """{norm: {batch: {'train_step_s': [...], 'inference_batch_s': [...]}}}, the norms taking turns.

    Each round times every (batch size, norm) pair on a fixed batch (the bare model step, no data
    pipeline); within a batch size the norms' order rotates from round to round.
    """
    torch.manual_seed(0)
    models = {n: Net(n).to(device) for n in norms}
    optimizers = {n: torch.optim.Adam(m.parameters(), lr=1e-3) for n, m in models.items()}
    times = {n: {b: {"train_step_s": [], "inference_batch_s": []} for b in batch_sizes} for n in norms}
    for round_, order in round_robin(norms, rounds + 1):  # round 0 warms every pair up and is not kept
        for b in batch_sizes:
            x, y = torch.randn(b, 1, 28, 28, device=device), torch.randint(0, 10, (b,), device=device)
            steps = max(2, images_per_block // b)
            for n in order:
                train_s, infer_s = step_and_inference_times(models[n], optimizers[n], x, y, steps, device)
                if round_:
                    times[n][b]["train_step_s"].append(train_s)
                    times[n][b]["inference_batch_s"].append(infer_s)
    return times


def summarize_norm_costs(times):
    """Medians over rounds: seconds per 60k-image training epoch, and inference images/s."""
    return {n: {str(b): {"train_epoch_s": statistics.median(t["train_step_s"]) * math.ceil(TRAIN_IMAGES / b),
                         "inference_images_per_s": b / statistics.median(t["inference_batch_s"]), **t}
                for b, t in by_batch.items()} for n, by_batch in times.items()}


def main_norm_costs(args):
    """Every norm at every batch size, side by side; writes results/bench_<device>_norms.json."""
    device = torch.device(args.device)
    if args.malloc == "keep" and device.type == "cpu":
        keep_freed_memory()
    times = norm_costs(device, list(COMPARED), list(BATCH_SIZES), args.rounds, args.cost_images)
    report = {"args": recorded(args), "hardware": hardware(device), "results": summarize_norm_costs(times)}
    out = Path(args.results) / bench_file(device.type, "norms")
    out.parent.mkdir(parents=True, exist_ok=True)
    save_json(report, out)
    print(f"{'batch':>6} " + " ".join(f"{n.upper() + ' train s/epoch':>18} {n.upper() + ' infer img/s':>16}"
                                      for n in COMPARED))
    for b in BATCH_SIZES:
        row = report["results"]
        print(f"{b:>6} " + " ".join(f"{row[n][str(b)]['train_epoch_s']:>18.1f} "
                                    f"{row[n][str(b)]['inference_images_per_s']:>16,.0f}" for n in COMPARED))
    print(f"wrote {out}")


# ---- inference: BN folded into the conv -----------------------------------------------------
INFERENCE_BATCH_SIZES = (1, 64, 1000)


def inference_models(device):
    """{name: model in eval mode}: BN, the same BN model folded, GN and LN, all with settled statistics."""
    from lab.bn_stats import folded
    torch.manual_seed(0)
    models = {n: Net(n).to(device) for n in COMPARED}
    with torch.no_grad():  # a few training-mode passes so BN's running statistics are not the initial 0 and 1
        for _ in range(3):
            models["bn"].train()(torch.randn(256, 1, 28, 28, device=device))
    models = {n: m.eval() for n, m in models.items()}
    return {"bn": models["bn"], "bn_folded": folded(models["bn"]), **{n: m for n, m in models.items() if n != "bn"}}


def inference_times(device, rounds, images_per_block):
    """{model: {batch: [seconds per batch, one per round]}} with the models taking turns, round 0 dropped."""
    models = inference_models(device)
    times = {n: {b: [] for b in INFERENCE_BATCH_SIZES} for n in models}
    with torch.no_grad():
        for round_, order in round_robin(models, rounds + 1):
            for b in INFERENCE_BATCH_SIZES:
                x, steps = torch.randn(b, 1, 28, 28, device=device), max(2, images_per_block // b)
                for n in order:
                    block = []
                    with timed(device, block):
                        for _ in range(steps):
                            models[n](x)
                    if round_:
                        times[n][b].append(block[0] / steps)
    return times, models


def main_inference(args):
    """BN, BN folded, GN and LN side by side; writes results/bench_<device>_inference.json."""
    device = torch.device(args.device)
    if args.malloc == "keep" and device.type == "cpu":
        keep_freed_memory()
    times, models = inference_times(device, args.inference_rounds, args.inference_images)
    x = torch.randn(1000, 1, 28, 28, device=device)
    with torch.no_grad():
        gap = (models["bn"](x) - models["bn_folded"](x)).abs().max().item()
    results = {n: {str(b): {"images_per_s": b / statistics.median(t), "batch_s": t} for b, t in by_batch.items()}
               for n, by_batch in times.items()}
    report = {"args": recorded(args), "hardware": hardware(device), "folded_max_abs_logit_difference": gap,
              "results": results}
    out = Path(args.results) / bench_file(device.type, "inference")
    out.parent.mkdir(parents=True, exist_ok=True)
    save_json(report, out)
    print(f"{'batch':>6} " + " ".join(f"{n + ' img/s':>16}" for n in results))
    for b in INFERENCE_BATCH_SIZES:
        print(f"{b:>6} " + " ".join(f"{results[n][str(b)]['images_per_s']:>16,.0f}" for n in results))
    print(f"folded BN: max |logit difference| {gap:.2e} over 1,000 random inputs; wrote {out}")


def main_workers_speedup(args):
    """bench.py workers: the runner with 1 and 2 workers (forked processes), alternating rounds."""
    import tempfile

    from plumbing.config import config_from_record, run_name
    from lab.runner import run_configs
    from lab.study import study_configs, summarize as summarize_study
    base = Config(epochs=1, train_subset=20_000, device="cpu", data_dir=args.data_dir)
    configs = study_configs(base, seeds=[0, 1])
    walls, accuracies = {1: [], 2: []}, {}
    with tempfile.TemporaryDirectory() as scratch:
        for i, order in round_robin((1, 2), args.rounds):
            for workers in order:
                folder = Path(scratch) / f"round{i}_w{workers}"
                began = time.perf_counter()
                runs = run_configs(configs, folder / "r.json", summarize_study, Engine(str(folder / "runs"), workers),
                                   log=lambda line: None)
                walls[workers].append(time.perf_counter() - began)
                accuracies.setdefault(workers, {run_name(config_from_record(r["config"])): r["epochs"][-1]["test_acc"]
                                                for r in runs})  # by name: runs come back in any order
                print(f"round {i + 1}: --workers {workers}: {walls[workers][-1]:.1f} s", flush=True)
    median = {w: statistics.median(t) for w, t in walls.items()}
    report = {"args": recorded(args), "hardware": hardware(torch.device("cpu")),
              "runs": [f"{c.norm}{'+L1' if c.l1 else ''} seed {c.seed}" for c in configs],
              "epochs": 1, "train_subset": base.train_subset, "wall_s": walls, "median_wall_s": median,
              "speedup": median[1] / median[2], "test_acc": accuracies[1], "same_accuracies": accuracies[1] == accuracies[2]}
    out = Path(args.results) / bench_file("cpu", "workers")
    out.parent.mkdir(parents=True, exist_ok=True)
    save_json(report, out)
    print(f"median wall: --workers 1 {median[1]:.1f} s, --workers 2 {median[2]:.1f} s, speed-up "
          f"{report['speedup']:.2f}x; same accuracies: "
          f"{report['same_accuracies']}; wrote {out}")


def main_command(args):
    """bench.py command: `python main.py --norm all` (the study's three variants for --seeds) from a cold start,
    with --workers 1 and 2 in alternating rounds: the workers' start, their imports and MNIST loads and the
    figures drawn after the runs are all in the wall time. `--repo` times another checkout's main.py (the
    commit before a change, say); every number it trains must equal between the two worker counts."""
    import subprocess
    import sys
    import tempfile
    repo = Path(args.repo).resolve()
    walls, run_seconds, accuracies = {1: [], 2: []}, {1: [], 2: []}, {}
    with tempfile.TemporaryDirectory() as scratch:
        for i, order in round_robin((1, 2), args.rounds):
            for workers in order:
                folder = Path(scratch) / f"round{i}_w{workers}"
                command = [sys.executable, str(repo / "main.py"), "--norm", "all", "--seeds", *map(str, args.seeds),
                           "--epochs", str(args.epochs), "--train-subset", str(args.train_subset), "--device", "cpu",
                           "--workers", str(workers), "--data-dir", str(Path(args.data_dir).absolute()), "--no-progress",
                           "--out", str(folder / "runs"), "--results", str(folder), "--images", str(folder / "images")]
                began = time.perf_counter()
                subprocess.run(command, cwd=repo, check=True, stdout=subprocess.DEVNULL)
                walls[workers].append(time.perf_counter() - began)
                runs = json.loads((folder / "study.json").read_text())["runs"]
                run_seconds[workers].append(sum(e["seconds"] for r in runs for e in r["epochs"]))
                accuracies.setdefault(workers, {f"{r['variant']} seed {r['config']['seed']}": r["epochs"][-1]["test_acc"]
                                                for r in runs})
                print(f"round {i + 1}: --workers {workers}: {walls[workers][-1]:.1f} s "
                      f"({run_seconds[workers][-1]:.1f} s inside the runs' epochs)", flush=True)
    median = {w: statistics.median(t) for w, t in walls.items()}
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    report = {"args": recorded(args), "hardware": hardware(torch.device("cpu")), "commit": commit or None,
              "command": f"python main.py --norm all --seeds {' '.join(map(str, args.seeds))} --epochs {args.epochs} "
                         f"--train-subset {args.train_subset} --workers W",
              "wall_s": walls, "median_wall_s": median, "speedup": median[1] / median[2],
              "epoch_seconds_sum": run_seconds, "test_acc": accuracies[1],
              "same_accuracies": accuracies[1] == accuracies[2]}
    label = f"command_e{args.epochs}_n{args.train_subset}" + (f"_{args.label}" if args.label else "")
    out = Path(args.results) / bench_file("cpu", label)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_json(report, out)
    print(f"median wall: --workers 1 {median[1]:.1f} s, --workers 2 {median[2]:.1f} s, speed-up "
          f"{report['speedup']:.2f}x; same accuracies: {report['same_accuracies']}; wrote {out}")


def main_notebook(args):
    """bench.py notebook: Run all of S5_Normalization.ipynb with its defaults in a fresh clone of --repo's HEAD
    (MNIST from --data-dir through $MNIST_DATA_DIR, nothing else set), timed from the kernel's start to its end;
    the executed notebook is kept at --output when given."""
    import subprocess
    import sys
    import tempfile
    import papermill
    repo = Path(args.repo).resolve()
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=True).stdout.strip()
    with tempfile.TemporaryDirectory() as scratch:
        clone = Path(scratch) / "clone"
        subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
        os.environ["MNIST_DATA_DIR"] = str(Path(args.data_dir).absolute())
        executed = Path(args.output).absolute() if args.output else Path(scratch) / "out.ipynb"
        began = time.perf_counter()
        papermill.execute_notebook(str(clone / "S5_Normalization.ipynb"), str(executed), cwd=str(clone),
                                   kernel_name="python3", progress_bar=False, log_output=True, stdout_file=sys.stdout)
        wall = time.perf_counter() - began
        runs = json.loads((clone / "runs" / "notebook" / "study.json").read_text())["runs"]
    cells = json.loads(executed.read_text())["cells"]
    report = {"args": recorded(args), "hardware": hardware(torch.device("cpu")), "commit": commit,
              "wall_s": wall, "cell_seconds": [c["metadata"].get("papermill", {}).get("duration") for c in cells],
              "runs": [{"variant": r["variant"], "seed": r["config"]["seed"], "epochs": len(r["epochs"]),
                        "test_acc": r["epochs"][-1]["test_acc"], "seconds": sum(e["seconds"] for e in r["epochs"]),
                        "fingerprint": r.get("fingerprint")} for r in runs]}
    out = Path(args.results) / bench_file("cpu", "notebook")
    out.parent.mkdir(parents=True, exist_ok=True)
    save_json(report, out)
    print(f"Run all: {wall / 60:.1f} min at {commit}; wrote {out}")


def flops_per_training_image(batch_size=64, norm="bn"):
    """FLOPs of one forward and backward pass, per image, counted by PyTorch's flop counter."""
    model, x = Net(norm), torch.randn(batch_size, 1, 28, 28)
    with FlopCounterMode(display=False) as counter:
        model(x).sum().backward()
    return counter.get_total_flops() / batch_size


def matmul_peak(device, size, reps=5):
    """Measured fp32 matmul FLOP/s on `device` (best of `reps` after a warm-up)."""
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    a @ b
    times = []
    for _ in range(reps):
        with timed(device, times):
            a @ b
    return 2 * size**3 / min(times)


def hardware(device):
    info = {"platform": platform.platform(), "processor": cpu_name(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def make_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    jobs = p.add_subparsers(dest="job", required=True, metavar="{pipelines,norms,workers,command,notebook}")

    def job(name, help, rounds):
        sub = jobs.add_parser(name, help=help, description=help, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        sub.add_argument("--rounds", type=int, default=rounds, help="rounds; each times every contender once")
        sub.add_argument("--results", default=RESULTS_DIR, help="folder for the JSON (its name: see the top of bench.py)")
        return sub.add_argument

    add = job("pipelines", "ours, the bare model step and the classic DataLoader, side by side", 10)
    add("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu | cuda")
    add("--data-dir", default=default_data_dir(), help=DATA_DIR_HELP)
    add("--batch-size", type=int, default=Config().batch_size, help="training batch size of every pipeline")
    add("--steps", type=int, default=200, help="timed training steps per pipeline and round")
    add("--warmup", type=int, default=20, help="untimed training steps first")
    add("--classic-workers", type=int, default=None, help="DataLoader workers (unset: 2 on CUDA, 0 on CPU)")
    add("--lever", choices=LEVERS, default="none", help="speed setting applied to ours and model")
    add("--norm", choices=NORMS, default="bn", help="normalization of the model")
    add("--malloc", choices=("keep", "default"), default="keep",
        help="CPU: keep: this repo's allocator setting for every pipeline; default: glibc's")
    add("--quick", action="store_true", help="fewer steps and rounds (about a minute on 2 cores)")

    add = job("norms", "BN, GN and LN at every batch size of config.BATCH_SIZES; inference with BN folded", 3)
    add("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu | cuda")
    add("--cost-images", type=int, default=1024, help="images per timed block of the training costs")
    add("--inference-rounds", type=int, default=10, help="rounds of the inference timing")
    add("--inference-images", type=int, default=2048, help="images per timed block of the inference timing")
    add("--malloc", choices=("keep", "default"), default="keep",
        help="CPU: keep: this repo's allocator setting; default: glibc's")

    add = job("workers", "short study runs with the runner at --workers 1 and 2, alternating rounds", 3)
    add("--data-dir", default=default_data_dir(), help=DATA_DIR_HELP)

    add = job("command", "python main.py --norm all from a cold start at --workers 1 and 2, alternating rounds", 1)
    add("--data-dir", default=default_data_dir(), help=DATA_DIR_HELP)
    add("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the study's runs")
    add("--epochs", type=int, default=1, help="epochs of every run")
    add("--train-subset", type=int, default=20_000, help="training images of every run (0: all)")
    add("--repo", default=str(Path(__file__).resolve().parents[1]), help="the checkout whose main.py is timed")
    add("--label", default="", help="appended to the file name (e.g. 'before' for another --repo)")

    add = job("notebook", "Run all of the notebook with its defaults in a fresh clone, timed", 1)
    add("--data-dir", default=default_data_dir(), help=DATA_DIR_HELP)
    add("--repo", default=str(Path(__file__).resolve().parents[1]), help="the checkout whose HEAD is cloned")
    add("--output", default=None, help="where to keep the executed notebook (unset: not kept)")
    return p


def parse_args(argv=None):
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    if args.job == "pipelines":
        if args.quick:
            args.steps, args.rounds, args.warmup = 60, 6, 5
        if args.classic_workers is None:
            args.classic_workers = 2 if args.device == "cuda" else 0
    return args


def pipelines_file(args):
    suffix = "".join(f"_{v}" for v, default in ((args.norm, "bn"), (args.lever, "none")) if v != default)
    suffix += "_malloc_default" if args.malloc == "default" else ""
    return Path(args.results) / f"bench_{args.device}{suffix}.json"


def recorded(args):
    """The flags as the results file keeps them: without the machine's data folder and the output folder."""
    return {k: v for k, v in vars(args).items() if k not in ("data_dir", "results", "repo")}


def main(argv=None):
    args = parse_args(argv)
    {"pipelines": main_pipelines, "norms": main_norms, "workers": main_workers_speedup,
     "command": main_command, "notebook": main_notebook}[args.job](args)


def main_norms(args):
    """bench.py norms: the norms' costs at every batch size, then inference with BN folded."""
    main_norm_costs(args)
    main_inference(args)


def main_pipelines(args):
    """bench.py pipelines: ours, model and classic side by side; writes pipelines_file(args)."""
    spec = Spec(args.device, args.data_dir, args.batch_size, args.norm, args.lever, args.warmup,
                args.classic_workers, args.malloc)
    device = torch.device(args.device)
    with multiprocessing.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        peaks = {name: pool.apply(peak_memory, (name, spec)) for name in PIPELINES}
    set_allocator(spec)  # process-wide, so it applies to every pipeline timed below
    pipelines = {name: make_pipeline(name, spec) for name in PIPELINES}
    times = time_rounds(pipelines, args.rounds, args.steps, device)
    results = summarize(times, args.steps, args.batch_size)
    flops = flops_per_training_image(args.batch_size, args.norm)
    peak = matmul_peak(device, 8192 if device.type == "cuda" else 2048)
    for name, r in results.items():
        r["peak_memory_mb"] = peaks[name]
        r["achieved_tflops"] = flops * r["train_images_per_s"] / 1e12
        r["fraction_of_matmul_peak"] = r["achieved_tflops"] * 1e12 / peak
    round_ratios = ratios(times, args.steps, args.batch_size, "classic", "ours")
    report = {"args": recorded(args), "hardware": hardware(device), "flops_per_training_image": flops,
              "matmul_peak_tflops": peak / 1e12, "results": results, "round_ratios": round_ratios,
              "ratio_classic_over_ours": statistics.median(round_ratios),
              "ratio_classic_over_model": statistics.median(
                  ratios(times, args.steps, args.batch_size, "classic", "model"))}
    out = pipelines_file(args)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_json(report, out)
    print_report(report, out)


def print_report(report, out):
    args, flops, peak = report["args"], report["flops_per_training_image"], report["matmul_peak_tflops"]
    print(f"{args['device']} | {report['hardware']['processor']} | {args['norm'].upper()} | batch "
          f"{args['batch_size']} | lever {args['lever']} | {args['rounds']} rounds x {args['steps']} steps, medians | "
          f"{flops / 1e6:.1f} MFLOP per training image | matmul peak {peak:.2f} TFLOP/s")
    print(f"{'pipeline':<9} {'train s/epoch':>14} {'test s/pass':>12} {'epoch s':>8} {'images/s':>9} "
          f"{'peak MB':>8} {'% of peak':>10}")
    for name, r in report["results"].items():
        print(f"{name:<9} {r['train_epoch_s']:>14.2f} {r['test_pass_s']:>12.3f} {r['epoch_s']:>8.2f} "
              f"{r['train_images_per_s']:>9.0f} {r['peak_memory_mb']:>8.0f} "
              f"{100 * r['fraction_of_matmul_peak']:>9.1f}%")
    print(f"wrote {out}")
    print(f"bound for any data pipeline, classic/model: {report['ratio_classic_over_model']:.2f}")
    print(f"epoch ratio per round: {', '.join(f'{r:.2f}' for r in report['round_ratios'])}")
    print(f"ratio classic/ours: {report['ratio_classic_over_ours']:.2f}")


if __name__ == "__main__":
    main()
