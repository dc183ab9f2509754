"""What every job shares: the turn-taking, the timer, the model, the machine and the one way a results file is
written (its args and hardware first, atomically through system.save_json)."""
import os
import platform
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from model import Net
from plumbing.layers import set_total_steps
from plumbing.system import cpu_name, fingerprint, keep_freed_memory, save_json


def round_robin(names, rounds):
    """(round, names in this round's order) for each round: the order rotates by one from round to round,
    so a drift in the machine's speed hits every name alike. The one turn-taking rule of every benchmark."""
    names = list(names)
    for round_ in range(rounds):
        yield round_, names[round_ % len(names):] + names[:round_ % len(names)]


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


def device_of(args):
    """The --device flag's torch.device, settled here (the parser imports no torch): unset, cuda where torch
    finds one, else cpu. The flags keep the settled name, so the results file records it."""
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(args.device)


def keep_memory(malloc, device):
    """This repo's CPU allocator setting (system.keep_freed_memory), unless --malloc default; it is process-wide,
    so one call covers every model the process times."""
    if malloc == "keep" and torch.device(device).type == "cpu":
        keep_freed_memory()


def net(norm, steps, device="cpu"):
    """Net(norm) on `device`, told the steps it will train: BRN's schedule is in fractions of them (and refuses to
    train without); the other norms ignore it."""
    model = Net(norm).to(device)
    set_total_steps(model, steps)
    return model


def hardware(device):
    """The machine the numbers belong to: CPU, cores, torch's threads and version, the CPU's fingerprint, and the
    GPU on CUDA."""
    info = {"platform": platform.platform(), "processor": cpu_name(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "fingerprint": fingerprint()}  # two VMs of one CPU name can differ: family, model, flags
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def recorded(args):
    """The flags as the results file keeps them: without the machine's data folder and the output folder."""
    return {k: v for k, v in vars(args).items() if k not in ("data_dir", "results", "repo")}


def save_results(args, device, name, fields):
    """Write args.results/name: the flags, the machine, then `fields`; returns (the report, its path)."""
    report = {"args": recorded(args), "hardware": hardware(device), **fields}
    out = Path(args.results) / name
    out.parent.mkdir(parents=True, exist_ok=True)
    save_json(report, out)
    return report, out
