"""Training: the L1 penalty, one epoch of training, evaluation, and a whole run (`fit`). The training loop
lives here, all of it; the settings of a run are `config.Config`, its folder's files `run_folder`.
"""
import random
import socket
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from config import DEVICES, SGD_MOMENTUM, run_label
from data import DeviceLoader, eval_batch_size
from model import Net, count_parameters, set_total_steps
from run_folder import checkpoint_state, resume
from system import WriteError, cpu_name, fingerprint, run_lock, save_json, save_torch, stop_requests


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
        raise ValueError(f"unknown device {name!r}; valid values are {', '.join(DEVICES)}")
    if not available[name]:
        raise ValueError(f"--device {name} was asked for, but this PyTorch build sees no "
                         f"{name.upper()} device here; use --device auto or --device cpu")
    return torch.device(name)


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


# ---- one epoch, and evaluation ---------------------------------------------------
class TrainingStopped(Exception):
    """Training stopped before the end; the last finished epoch is kept in `run_dir`."""

    def __init__(self, message, run_dir=None, epoch=None, step=None):
        super().__init__(message)
        self.run_dir, self.epoch, self.step = run_dir, epoch, step


class NonFiniteLoss(TrainingStopped):
    """The loss was NaN or infinite at `step` of `epoch`."""


class Interrupted(TrainingStopped):
    pass


class WriteFailed(TrainingStopped):
    """A checkpoint or metrics file could not be written; the files of the last good epoch are kept."""


def _check(step, loss_sum, loss, should_stop):
    """Stop on a non-finite loss in any step since the last check, or on a stop request."""
    if not torch.isfinite(loss_sum + loss.detach()):
        raise NonFiniteLoss(f"step {step}: the loss is {loss.item()}", step=step)
    if should_stop():
        raise Interrupted(f"step {step}", step=step)


def train_epoch(model, loader, optimizer, scheduler=None, l1_lambda=0.0, progress=False,
                should_stop=lambda: False, check_every=1):
    """Train for one epoch; return {'loss', 'acc'} (cross-entropy without the L1 term, percent).

    `loader` is any iterable of (images, labels) batches: a DeviceLoader or a plain DataLoader.
    Losses are summed on the device; the host looks at them every `check_every` steps (each
    look waits for the device) to stop on a non-finite loss or a signal.
    """
    model.train()
    device = next(model.parameters()).device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = step = 0
    with tqdm(loader, desc="train", leave=False, disable=not progress, mininterval=0.5) as bar:
        for step, (x, y) in enumerate(bar, start=1):  # `with` clears the bar on an exception too
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
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
            seen += len(y)
            if step % check_every == 0:
                _check(step, loss_sum, loss, should_stop)
                bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}", refresh=False)
    if not seen:
        raise ValueError("the training loader yielded no batches")
    if step % check_every:
        _check(step, loss_sum, loss, should_stop)
    return {"loss": loss_sum.item() / seen, "acc": 100.0 * correct.item() / seen}


@torch.no_grad()
def evaluate(model, loader):
    """{'loss', 'acc'}: mean cross-entropy over every sample of `loader`, accuracy in percent."""
    model.eval()
    device = next(model.parameters()).device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits = model(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
        correct += (logits.argmax(1) == y).sum()
        seen += len(y)
    if not seen:
        raise ValueError("the evaluation loader yielded no batches")
    return {"loss": loss_sum.item() / seen, "acc": 100.0 * correct.item() / seen}


# ---- a whole run ------------------------------------------------------------------
def build(config, splits):
    """Model, loaders, Adam and its one-cycle schedule for `config`, seeded; BRN's schedule spans the same steps."""
    set_seed(config.seed)
    device = splits["train"][0].device
    model = Net.from_config(config).to(device)
    train_loader = DeviceLoader(*splits["train"], config.batch_size, shuffle=True,
                                degrees=config.degrees, shift=config.shift, seed=config.seed)
    eval_loaders = {name: DeviceLoader(*splits[name], eval_batch_size(device))
                    for name in ("val", "test") if name in splits}
    optimizer = make_optimizer(config, model.parameters())
    total_steps = config.epochs * len(train_loader)
    set_total_steps(model, total_steps)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=total_steps)
    return model, train_loader, eval_loaders, optimizer, scheduler


def make_optimizer(config, parameters):
    """Adam, or SGD with momentum; the one-cycle schedule sets its learning rate at every step."""
    if config.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=config.lr, momentum=SGD_MOMENTUM, weight_decay=config.weight_decay)
    raise ValueError(f"unknown optimizer {config.optimizer!r}; valid values are adam, sgd")


def where_it_runs(device):
    """What a run records of where it trained: device, node, CPU, torch, threads, the GPU's name on a GPU,
    and the machine's arithmetic fingerprint (system.fingerprint)."""
    where = {"device": str(device), "node": socket.gethostname(), "torch": torch.__version__, "cpu": cpu_name(),
             "threads": torch.get_num_threads(), "fingerprint": fingerprint()}
    if device.type == "cuda":
        where["gpu"] = torch.cuda.get_device_name(device)
    return where


def epoch_line(label, row, epochs):
    return (f"{label:>5} epoch {row['epoch']:2d}/{epochs} | train loss {row['train_loss']:.4f} "
            f"acc {row['train_acc']:6.2f}% | test loss {row['test_loss']:.4f} "
            f"acc {row['test_acc']:6.2f}% | {row['seconds']:5.1f} s")


def fit(config, splits, run_dir, label=None, progress=True, log=print, final_metrics=None, on_epoch=None):
    """Train one run into `run_dir`, resuming from its checkpoint.pt if there is one.

    After every epoch checkpoint.pt and metrics.json are rewritten atomically; model.pt (the final
    state_dict) is written at the end. `final_metrics(model, splits, config)` returns more metrics
    of the last epoch (e.g. BN tested with other statistics), added before that last write; `on_epoch(row)`
    is called after each epoch is saved. The folder is locked while this runs, every write included.
    Returns (metrics, model).
    """
    run_dir, label = Path(run_dir), label or run_label(config)
    run_dir.mkdir(parents=True, exist_ok=True)
    with run_lock(run_dir), stop_requests() as should_stop:
        model, train_loader, eval_loaders, optimizer, scheduler = build(config, splits)
        device = splits["train"][0].device
        metrics = {"config": asdict(config), "params": count_parameters(model), **where_it_runs(device),
                   "epochs": []}
        if (run_dir / "metrics.json").exists() or (run_dir / "checkpoint.pt").exists():
            metrics = resume(run_dir, model, optimizer, scheduler, train_loader, device, log, label) or metrics
        check_every = 1 if device.type == "cpu" else 50
        step_model = torch.compile(model) if config.compile else model  # checkpoints keep `model`'s names
        for epoch in range(len(metrics["epochs"]) + 1, config.epochs + 1):
            start = time.perf_counter()
            try:
                result = train_epoch(step_model, train_loader, optimizer, scheduler, config.l1, progress,
                                     should_stop, check_every)
            except (NonFiniteLoss, Interrupted) as error:
                raise type(error)(f"{label} epoch {epoch}, {error}", run_dir, epoch, error.step) from None
            row = {"epoch": epoch, "train_loss": result["loss"], "train_acc": result["acc"]}
            for name, loader in eval_loaders.items():
                result = evaluate(step_model, loader)
                row.update({f"{name}_loss": result["loss"], f"{name}_acc": result["acc"]})
            row["seconds"] = time.perf_counter() - start
            metrics["epochs"].append(row)
            save_run_files(run_dir, label, epoch, metrics,
                           checkpoint=checkpoint_state(model, optimizer, scheduler, train_loader, metrics))
            log(epoch_line(label, row, config.epochs))
            if on_epoch is not None:
                on_epoch(row)
        if final_metrics is not None and metrics["epochs"]:
            metrics["epochs"][-1].update(final_metrics(model, splits, config))
        save_run_files(run_dir, label, len(metrics["epochs"]), metrics, final_model=model.state_dict())
    return metrics, model


def save_run_files(run_dir, label, epoch, metrics, checkpoint=None, final_model=None):
    """checkpoint.pt, then metrics.json (or model.pt at the end); a failed write stops the run cleanly."""
    try:
        if checkpoint is not None:
            save_torch(checkpoint, run_dir / "checkpoint.pt")
        save_json(metrics, run_dir / "metrics.json")
        if final_model is not None:
            save_torch(final_model, run_dir / "model.pt")
    except WriteError as error:
        raise WriteFailed(f"{label} epoch {epoch}: {error}", run_dir) from None
