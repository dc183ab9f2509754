"""Training helpers: config, seeding, device, L1 penalty, train/test loops, one full run."""
import ctypes
import json
import os
import platform
import random
import signal
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

STUDY_L1 = 1e-5  # the L1 lambda of the study's BN+L1 variant (chosen on validation, see README)


@dataclass
class Config:
    """Every setting of one run; the CLI flags and the notebook both fill this."""
    norm: str = "bn"          # bn | gn | ln
    epochs: int = 20
    batch_size: int = 64
    lr: float = 0.01          # peak learning rate of Adam's one-cycle schedule
    weight_decay: float = 0.0  # Adam's L2 penalty (0 = off)
    l1: float = 0.0           # lambda of the L1 penalty on conv weights (0 = off)
    gn_groups: int = 4        # groups of GroupNorm for norm="gn"
    dropout: float = 0.05
    degrees: float = 8.0      # training augmentation: max rotation, degrees
    shift: float = 2.0        # training augmentation: max shift, pixels
    seed: int = 0
    val_split: int = 0        # training images held out for validation (0 = none)
    train_subset: int = 0     # train on the first N images only (0 = all)
    data_dir: str = "data"
    device: str = "auto"      # auto | cpu | cuda | mps
    compile: bool = False     # torch.compile the model (the first epoch compiles; see README, Speed)


# ---- setup ----------------------------------------------------------------
def set_seed(seed):
    """Seed python, numpy and torch (every device) for one run."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds CUDA and MPS


def get_device(name="auto"):
    """torch.device for 'auto' | 'cpu' | 'cuda' | 'mps'; ValueError if it is not available."""
    available = {"cpu": True, "cuda": torch.cuda.is_available(),
                 "mps": getattr(torch.backends, "mps", None) is not None
                 and torch.backends.mps.is_available()}
    if name == "auto":
        name = "cuda" if available["cuda"] else "mps" if available["mps"] else "cpu"
    if name not in available:
        raise ValueError(f"unknown device {name!r}; valid values are auto, cpu, cuda, mps")
    if not available[name]:
        raise ValueError(f"--device {name} was asked for, but this PyTorch build sees no "
                         f"{name.upper()} device here; use --device auto or --device cpu")
    return torch.device(name)


def cpu_name():
    """The CPU's model name (results reproduce bit for bit only on the same CPU, torch and threads)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def keep_freed_memory():
    """Make glibc keep freed memory for reuse instead of handing it back to the OS (CPU speed).

    Every step allocates and frees activations of 2-8 MB. Whether glibc returns such blocks
    to the OS, so that the next step page-faults on fresh pages, depends on the heap's history:
    measured here, a CPU test pass went from 0.4 s to 0.8-1.1 s with about 300,000 page faults,
    and some training runs took ~700 faults per step. Fixed mmap and trim thresholds make it
    never happen. The arithmetic is untouched, so results stay bit for bit the same. Returns
    True where it applied (Linux with glibc); elsewhere it does nothing.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # macOS, Windows, musl
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # from <malloc.h>
    return bool(libc.mallopt(M_MMAP_THRESHOLD, 32 * 2**20)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**30))


def eval_batch_size(device):
    """Test batch size: 1,000 on a GPU; 256 on a CPU, which the committed CPU results used.

    (256 was chosen because 1,000 ran slower on a CPU; that gap was page faults, which
    keep_freed_memory removes, so 256 stays only to keep those results reproducible.)
    """
    return 256 if device.type == "cpu" else 1000


# ---- the L1 penalty ---------------------------------------------------------
def l1_weights(model):
    """The tensors L1 covers: the weights of every conv and linear layer.

    Normalization scales/shifts and biases are left out: shrinking a BN scale
    towards 0 switches a channel off rather than making the model simpler.
    """
    return [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def l1_penalty(model):
    """Sum of |w| over l1_weights(model)."""
    return sum(w.abs().sum() for w in l1_weights(model))


# ---- one epoch --------------------------------------------------------------
class TrainingStopped(Exception):
    """Training stopped before the end; the last finished epoch is kept in `run_dir`."""

    def __init__(self, message, run_dir=None):
        super().__init__(message)
        self.run_dir = run_dir


class NonFiniteLoss(TrainingStopped):
    pass


class Interrupted(TrainingStopped):
    pass


def train(model, loader, optimizer, scheduler=None, l1_lambda=0.0, progress=False,
          should_stop=lambda: False, check_every=1):
    """Train for one epoch; return {'loss', 'acc'} (cross-entropy without the L1 term, percent).

    Losses are summed on the device; the host looks at them every `check_every`
    steps to stop on a non-finite loss (NonFiniteLoss) or a signal (Interrupted).
    """
    model.train()
    device = next(model.parameters()).device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    with tqdm(loader, desc="train", leave=False, disable=not progress, mininterval=0.5) as bar:
        for step, (x, y) in enumerate(bar, start=1):  # `with` clears the bar on an exception too
            logits = model(x)
            data_loss = F.cross_entropy(logits, y)
            loss = (data_loss + l1_lambda * l1_penalty(model)) if l1_lambda else data_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            loss_sum += data_loss.detach() * len(y)
            correct += (logits.argmax(1) == y).sum()
            if step % check_every == 0 or step == len(loader):
                if not torch.isfinite(loss_sum + loss.detach()):  # any step since the last check
                    raise NonFiniteLoss(f"step {step}: the loss is {loss.item()}")
                if should_stop():
                    raise Interrupted(f"step {step}")
                bar.set_postfix(loss=f"{loss_sum.item() / (step * len(y)):.4f}", refresh=False)
    n = loader.num_samples
    return {"loss": loss_sum.item() / n, "acc": 100.0 * correct.item() / n}


@torch.no_grad()
def test(model, loader):
    """{'loss', 'acc'}: mean cross-entropy over every sample of `loader`, accuracy in percent."""
    model.eval()
    device = next(model.parameters()).device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    for x, y in loader:
        logits = model(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
        correct += (logits.argmax(1) == y).sum()
    n = loader.num_samples
    return {"loss": loss_sum.item() / n, "acc": 100.0 * correct.item() / n}


@torch.no_grad()
def collect_misclassified(model, loader, limit=10):
    """The first `limit` wrong test predictions: {'images', 'true', 'pred', 'confidence'} on the CPU."""
    model.eval()
    found = {"images": [], "true": [], "pred": [], "confidence": []}
    for x, y in loader:
        probs = model(x).softmax(1)
        confidence, pred = probs.max(1)
        wrong = pred != y
        for key, value in zip(found, (x, y, pred, confidence)):
            found[key].append(value[wrong].cpu())
        if sum(len(t) for t in found["true"]) >= limit:
            break
    return {key: torch.cat(value)[:limit] for key, value in found.items()}


# ---- files --------------------------------------------------------------------
def atomic_write(path, write):
    """Write via `write(file)` into a temp file beside `path`, fsync, then rename over `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as file:
        write(file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)


def save_json(obj, path):
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=1).encode() + b"\n"))


def save_torch(obj, path):
    atomic_write(path, lambda f: torch.save(obj, f))


@contextmanager
def stop_requests():
    """Within the block, SIGINT/SIGTERM only set a flag; yields a function that reads it."""
    requested = []
    handler = lambda signum, frame: requested.append(signum)
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread: leave signals alone
            pass
    try:
        yield lambda: bool(requested)
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
