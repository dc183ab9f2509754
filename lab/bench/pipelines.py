"""bench.py pipelines: this repo's device-resident pipeline vs. the classic per-image DataLoader, side by side.

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
"""
import math
import multiprocessing
import resource
import statistics
import time
from contextlib import nullcontext
from dataclasses import dataclass
from itertools import repeat

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode
from torchvision import datasets, transforms

from lab.bench.timing import device_of, keep_memory, net, round_robin, save_results, timed
from plumbing.config import TRAIN_IMAGES, Config
from plumbing.data import MNIST_MEAN, MNIST_STD, DeviceLoader, eval_batch_size, load_mnist

PIPELINES = ("ours", "model", "classic")
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
    train_steps: int  # all a pipeline trains, warm-up and rounds: BRN's schedule is in fractions of it


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
    model, lever = net(spec.norm, spec.train_steps, device), spec.lever if name != "classic" else "none"
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


def peak_memory(name, spec):
    """Runs in a fresh process: peak memory (MB) of warming one pipeline up and one more test pass."""
    keep_memory(spec.malloc, spec.device)
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


def flops_per_training_image(batch_size=64, norm="bn"):
    """FLOPs of one forward and backward pass, per image, counted by PyTorch's flop counter."""
    model, x = net(norm, 1), torch.randn(batch_size, 1, 28, 28)
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


def pipelines_file(args):
    """bench_<device>[_<norm>][_<lever>][_malloc_default].json: a part only where it is not the default."""
    suffix = "".join(f"_{v}" for v, default in ((args.norm, "bn"), (args.lever, "none")) if v != default)
    suffix += "_malloc_default" if args.malloc == "default" else ""
    return f"bench_{args.device}{suffix}.json"


def run(args):
    """bench.py pipelines: ours, model and classic side by side; writes pipelines_file(args)."""
    device = device_of(args)
    if args.classic_workers is None:
        args.classic_workers = 2 if args.device == "cuda" else 0
    spec = Spec(args.device, args.data_dir, args.batch_size, args.norm, args.lever, args.warmup,
                args.classic_workers, args.malloc, args.warmup + args.rounds * args.steps)
    with multiprocessing.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        peaks = {name: pool.apply(peak_memory, (name, spec)) for name in PIPELINES}
    keep_memory(spec.malloc, spec.device)  # process-wide, so it applies to every pipeline timed below
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
    ratio_bound = statistics.median(ratios(times, args.steps, args.batch_size, "classic", "model"))
    print_report(*save_results(args, device, pipelines_file(args), {
        "flops_per_training_image": flops, "matmul_peak_tflops": peak / 1e12, "results": results,
        "round_ratios": round_ratios, "ratio_classic_over_ours": statistics.median(round_ratios),
        "ratio_classic_over_model": ratio_bound}))


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
