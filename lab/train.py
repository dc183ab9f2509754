"""One whole run: seeding, the model, loaders, optimizer and schedule of a config (`build`), and `fit`, which trains
it in a run folder with checkpoints, resume, a lock, signals and a record of where it ran. The loops themselves
are utils.py's.
"""
import random
import socket
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from model import Net, count_parameters
from plumbing.layers import set_total_steps
from plumbing.config import DEVICES, SGD_MOMENTUM, run_label
from plumbing.data import DeviceLoader, eval_batch_size
from plumbing.run_folder import checkpoint_state, resume
from plumbing.system import WriteError, cpu_name, fingerprint, run_lock, save_json, save_torch, stop_requests
from utils import Interrupted, NonFiniteLoss, TrainingStopped, evaluate, train_epoch


class WriteFailed(TrainingStopped):
    """A checkpoint or metrics file could not be written; the files of the last good epoch are kept."""


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
