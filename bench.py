"""Speed: this repo's device-resident pipeline vs. the classic per-image DataLoader, side by side.

    python bench.py --device cpu --data-dir ../shared/mnist            # full measurement
    python bench.py --quick --device cpu --data-dir ../shared/mnist    # about a minute on 2 cores

Both pipelines train the same model (BN), batch size, optimizer and number of steps on the same
device; each runs in its own process so peak memory is its own. Times are medians over
repetitions after a warm-up (CUDA events on a GPU), in rounds that alternate the two pipelines; the
ratio is the median over rounds. Writes results/bench_<device>.json.
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
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F

TRAIN_IMAGES, TEST_IMAGES = 60_000, 10_000


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


def ours(args, device):
    """(train batches, test batches) of this repo: tensors on the device, batched augmentation."""
    from data import DeviceLoader, load_mnist
    from utils import Config, eval_batch_size
    c = Config()
    splits = load_mnist(args.data_dir, device)
    train = DeviceLoader(*splits["train"], args.batch_size, shuffle=True, degrees=c.degrees, shift=c.shift)
    return train, DeviceLoader(*splits["test"], eval_batch_size(device))


def classic(args, device):
    """The published solutions' way: torchvision MNIST, per-image PIL transforms, a DataLoader."""
    from torchvision import datasets, transforms

    from data import MNIST_MEAN, MNIST_STD
    normalize = [transforms.ToTensor(), transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))]
    train_set = datasets.MNIST(args.data_dir, train=True, download=True, transform=transforms.Compose(
        [transforms.RandomRotation((-7.0, 7.0), fill=(0,)), *normalize]))
    test_set = datasets.MNIST(args.data_dir, train=False, transform=transforms.Compose(normalize))
    workers = args.classic_workers if args.classic_workers is not None else (2 if device.type == "cuda" else 0)
    kw = dict(batch_size=args.batch_size, num_workers=workers, pin_memory=device.type == "cuda")
    return (torch.utils.data.DataLoader(train_set, shuffle=True, **kw),
            torch.utils.data.DataLoader(test_set, shuffle=False, **kw))


def batches(loader, device):
    """Endless (x, y) on `device`, as a training loop would consume them."""
    while True:
        for x, y in loader:
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def train_steps(model, optimizer, stream, steps):
    model.train()
    for _ in range(steps):
        x, y = next(stream)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


@torch.no_grad()
def test_pass(model, loader, device):
    model.eval()
    correct = torch.zeros((), device=device, dtype=torch.long)
    for x, y in loader:
        correct += (model(x.to(device)).argmax(1) == y.to(device)).sum()
    return correct.item()


def measure(name, args):
    """Runs in a child process: train-step and test-pass times and peak memory of one pipeline."""
    from model import Net
    torch.manual_seed(0)
    device = torch.device(args.device)
    train_loader, test_loader = (ours if name == "ours" else classic)(args, device)
    model = Net("bn").to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    stream = batches(train_loader, device)
    train_steps(model, optimizer, stream, args.warmup)
    test_pass(model, test_loader, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    train_times, test_times = [], []
    for _ in range(args.reps):
        with timed(device, train_times):
            train_steps(model, optimizer, stream, args.steps)
    for _ in range(args.test_reps):
        with timed(device, test_times):
            test_pass(model, test_loader, device)
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda" else
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"train_times_s": train_times, "test_times_s": test_times, "peak_memory_mb": peak / 2**20}


def summarize(rounds, args):
    """Medians over every repetition of every round, per pipeline."""
    steps_per_epoch = math.ceil(TRAIN_IMAGES / args.batch_size)
    results = {}
    for name in rounds[0]:
        train_times = [t for r in rounds for t in r[name]["train_times_s"]]
        train_s = statistics.median(train_times)
        results[name] = {
            "train_epoch_s": train_s / args.steps * steps_per_epoch,
            "test_pass_s": statistics.median(t for r in rounds for t in r[name]["test_times_s"]),
            "train_images_per_s": args.steps * args.batch_size / train_s,
            "peak_memory_mb": max(r[name]["peak_memory_mb"] for r in rounds),
            "train_times_s": train_times,
        }
    return results


def flops_per_training_image(batch_size=64):
    """FLOPs of one forward and backward pass, per image, counted by PyTorch's flop counter."""
    from torch.utils.flop_counter import FlopCounterMode

    from model import Net
    model, x = Net("bn"), torch.randn(batch_size, 1, 28, 28)
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


def cpu_name():
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def hardware(device):
    info = {"platform": platform.platform(), "processor": cpu_name(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu | cuda")
    p.add_argument("--data-dir", default=os.environ.get("MNIST_DATA_DIR", "data"), help="MNIST root")
    p.add_argument("--batch-size", type=int, default=64, help="training batch size of both pipelines")
    p.add_argument("--steps", type=int, default=200, help="timed training steps per repetition")
    p.add_argument("--reps", type=int, default=5, help="repetitions of the timed steps")
    p.add_argument("--test-reps", type=int, default=3, help="repetitions of the test pass")
    p.add_argument("--warmup", type=int, default=20, help="untimed steps first")
    p.add_argument("--rounds", type=int, default=3,
                   help="rounds of ours-then-classic; alternating cancels drifts of the machine's speed")
    p.add_argument("--classic-workers", type=int, default=None, help="DataLoader workers (unset: 2 on CUDA, 0 on CPU)")
    p.add_argument("--quick", action="store_true", help="fewer steps and repetitions (about a minute on 2 cores)")
    p.add_argument("--out", default=None, help="JSON path (unset: results/bench_<device>.json)")
    args = p.parse_args()
    if args.quick:
        args.steps, args.reps, args.test_reps, args.warmup, args.rounds = 60, 2, 1, 5, 2
    device = torch.device(args.device)
    rounds = []
    with multiprocessing.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        for _ in range(args.rounds):
            rounds.append({name: pool.apply(measure, (name, args)) for name in ("ours", "classic")})
    results = summarize(rounds, args)
    round_ratios = [statistics.median(r["classic"]["train_times_s"]) / statistics.median(r["ours"]["train_times_s"])
                    for r in rounds]
    flops = flops_per_training_image(args.batch_size)
    peak = matmul_peak(device, 8192 if device.type == "cuda" else 2048)
    for r in results.values():
        r["achieved_tflops"] = flops * r["train_images_per_s"] / 1e12
        r["fraction_of_matmul_peak"] = r["achieved_tflops"] * 1e12 / peak
    report = {"args": vars(args), "hardware": hardware(device), "flops_per_training_image": flops,
              "matmul_peak_tflops": peak / 1e12, "results": results,
              "round_ratios": round_ratios, "ratio_classic_over_ours": statistics.median(round_ratios)}
    out = Path(args.out or f"results/bench_{device.type}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"{device} | {report['hardware']['processor']} | batch {args.batch_size} | {args.rounds} rounds x "
          f"{args.reps} reps x {args.steps} steps, medians | {flops / 1e6:.1f} MFLOP per training image | "
          f"matmul peak {peak / 1e12:.2f} TFLOP/s")
    print(f"{'pipeline':<9} {'train s/epoch':>14} {'test s/pass':>12} {'images/s':>10} {'peak MB':>9} {'% of peak':>10}")
    for name, r in results.items():
        print(f"{name:<9} {r['train_epoch_s']:>14.2f} {r['test_pass_s']:>12.3f} {r['train_images_per_s']:>10.0f} "
              f"{r['peak_memory_mb']:>9.0f} {100 * r['fraction_of_matmul_peak']:>9.1f}%")
    print(f"wrote {out}")
    print(f"ratio per round: {', '.join(f'{r:.2f}' for r in round_ratios)}")
    print(f"ratio classic/ours: {report['ratio_classic_over_ours']:.2f}")


if __name__ == "__main__":
    main()
