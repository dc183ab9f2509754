"""One training run with checkpoints and resume, and the GN / LN / BN+L1 study built from runs."""
import random
import shutil
import statistics
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from data import DeviceLoader
from model import Net, count_parameters
from utils import (STUDY_L1, Interrupted, NonFiniteLoss, cpu_name, save_json, save_torch,
                   eval_batch_size, keep_freed_memory, set_seed, stop_requests, test, train)

# key -> (label on figures, settings that differ from the shared recipe)
VARIANTS = {
    "gn": ("GN", {"norm": "gn"}),
    "ln": ("LN", {"norm": "ln"}),
    "bn_l1": ("BN+L1", {"norm": "bn", "l1": STUDY_L1}),
}
TARGET_ACC = 99.4  # percent; the accuracy goal the summary tracks


def run_name(config):
    return f"{config.norm}{'_l1' if config.l1 else ''}_seed{config.seed}"


def new_run_dir(out, name, overwrite=False):
    """An empty OUT/name; an existing one is replaced with --overwrite, else name-2, name-3, ..."""
    path, n = Path(out) / name, 1
    if overwrite and path.exists():
        shutil.rmtree(path)
    while path.exists():
        n += 1
        path = Path(out) / f"{name}-{n}"
    path.mkdir(parents=True)
    return path


def build(config, splits):
    """Model, loaders, Adam and its one-cycle schedule for `config`, seeded."""
    set_seed(config.seed)
    device = splits["train"][0].device
    if device.type == "cpu":
        keep_freed_memory()
    model = Net(config.norm, config.gn_groups, config.dropout).to(device)
    train_loader = DeviceLoader(*splits["train"], config.batch_size, shuffle=True,
                                degrees=config.degrees, shift=config.shift, seed=config.seed)
    eval_loaders = {name: DeviceLoader(*splits[name], eval_batch_size(device))
                    for name in ("val", "test") if name in splits}
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=config.epochs * len(train_loader))
    return model, train_loader, eval_loaders, optimizer, scheduler


def checkpoint_state(model, optimizer, scheduler, train_loader, metrics):
    """Everything needed to continue exactly where the last finished epoch ended."""
    return {
        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(), "loader_rng": train_loader.generator.get_state(),
        "torch_rng": torch.get_rng_state(), "numpy_rng": np.random.get_state(),
        "python_rng": random.getstate(), "metrics": metrics,
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def restore(state, model, optimizer, scheduler, train_loader):
    """Load a checkpoint_state() into the objects; returns its metrics."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    train_loader.generator.set_state(state["loader_rng"])
    torch.set_rng_state(state["torch_rng"])
    np.random.set_state(state["numpy_rng"])
    random.setstate(state["python_rng"])
    if state["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return state["metrics"]


def epoch_line(label, row, epochs):
    return (f"{label:>5} epoch {row['epoch']:2d}/{epochs} | train loss {row['train_loss']:.4f} "
            f"acc {row['train_acc']:6.2f}% | test loss {row['test_loss']:.4f} "
            f"acc {row['test_acc']:6.2f}% | {row['seconds']:5.1f} s")


def fit(config, splits, run_dir, label=None, progress=True, log=print):
    """Train one run into `run_dir`, resuming from its checkpoint.pt if there is one.

    After every epoch checkpoint.pt and metrics.json are rewritten atomically;
    model.pt (the final state_dict) is written at the end. Returns (metrics, model).
    """
    run_dir, label = Path(run_dir), label or config.norm.upper() + ("+L1" if config.l1 else "")
    run_dir.mkdir(parents=True, exist_ok=True)
    model, train_loader, eval_loaders, optimizer, scheduler = build(config, splits)
    device = splits["train"][0].device
    metrics = {"config": asdict(config), "params": count_parameters(model), "device": str(device),
               "torch": torch.__version__, "cpu": cpu_name(), "threads": torch.get_num_threads(),
               "epochs": []}
    if (run_dir / "checkpoint.pt").exists():
        state = torch.load(run_dir / "checkpoint.pt", map_location=device, weights_only=False)
        metrics = restore(state, model, optimizer, scheduler, train_loader)
    check_every = 1 if device.type == "cpu" else 50  # each check waits for the device
    step_model = torch.compile(model) if config.compile else model  # checkpoints keep `model`'s names
    with stop_requests() as should_stop:
        for epoch in range(len(metrics["epochs"]) + 1, config.epochs + 1):
            start = time.perf_counter()
            try:
                result = train(step_model, train_loader, optimizer, scheduler, config.l1, progress,
                               should_stop, check_every)
            except (NonFiniteLoss, Interrupted) as error:
                raise type(error)(f"{label} epoch {epoch}, {error}", run_dir) from None
            row = {"epoch": epoch, "train_loss": result["loss"], "train_acc": result["acc"]}
            for name, loader in eval_loaders.items():
                result = test(step_model, loader)
                row.update({f"{name}_loss": result["loss"], f"{name}_acc": result["acc"]})
            row["seconds"] = time.perf_counter() - start
            metrics["epochs"].append(row)
            save_torch(checkpoint_state(model, optimizer, scheduler, train_loader, metrics),
                       run_dir / "checkpoint.pt")
            save_json(metrics, run_dir / "metrics.json")
            log(epoch_line(label, row, config.epochs))
    save_torch(model.state_dict(), run_dir / "model.pt")
    return metrics, model


# ---- the study ----------------------------------------------------------------
def study_runs(base, seeds):
    """(key, label, config) of every variant for every seed, seed-major."""
    for seed in seeds:
        for key, (label, overrides) in VARIANTS.items():
            yield key, label, replace(base, seed=seed, **overrides)


def run_study(base, seeds, splits, out, l1=None, overwrite=False, progress=True, log=print):
    """Fit GN, LN and BN+L1 for every seed; returns (runs, {label: first seed's model}).

    `l1` replaces the BN+L1 lambda (default STUDY_L1); each run keeps its own folder in `out`.
    """
    runs, models = [], {}
    for key, label, config in study_runs(base, seeds):
        if l1 is not None and config.l1:
            config = replace(config, l1=l1)
        run_dir = new_run_dir(out, f"{key}_seed{config.seed}", overwrite)
        metrics, model = fit(config, splits, run_dir, label, progress, log)
        runs.append({"variant": label, **metrics})
        models.setdefault(label, model)
    return runs, models


def save_study(runs, results_dir):
    """results_dir/study.json: the summary and every run's config and per-epoch metrics."""
    summary = summarize(runs)
    Path(results_dir).mkdir(parents=True, exist_ok=True)
    save_json({"summary": summary, "runs": runs}, Path(results_dir) / "study.json")
    return summary


def summary_table(summary):
    """The summary as a Markdown table."""
    lines = [f"| variant | params | final test acc, mean +- std | min | max | seeds | "
             f"first epoch mean >= {TARGET_ACC}% | min of mean, last 5 epochs |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for label, s in summary.items():
        lines.append(f"| {label} | {s['params']:,} | {s['mean']:.2f} +- {s['std']:.2f}% | {s['min']:.2f}% "
                     f"| {s['max']:.2f}% | {len(s['seeds'])} | {s['first_epoch_mean_reaches_target'] or '-'} "
                     f"| {s['last5_min_of_mean']:.2f}% |")
    return "\n".join(lines)


def by_variant(runs):
    """{label: [runs of that variant]}, labels in the order they first appear."""
    groups = {}
    for run in runs:
        groups.setdefault(run["variant"], []).append(run)
    return groups


def summarize(runs):
    """Per variant: params and mean/std/min/max of the final test accuracy over seeds, and more."""
    summary = {}
    for label, group in by_variant(runs).items():
        final = [run["epochs"][-1]["test_acc"] for run in group]
        curves = np.array([[row["test_acc"] for row in run["epochs"]] for run in group])
        mean_curve = curves.mean(0)
        reached = np.flatnonzero(mean_curve >= TARGET_ACC)
        summary[label] = {
            "params": group[0]["params"], "seeds": [run["config"]["seed"] for run in group],
            "final_test_acc": final, "mean": statistics.mean(final),
            "std": statistics.stdev(final) if len(final) > 1 else 0.0,
            "min": min(final), "max": max(final),
            "best_epoch_mean": float(mean_curve.max()),
            "last5_min_of_mean": float(mean_curve[-5:].min()),
            "first_epoch_mean_reaches_target": int(reached[0]) + 1 if len(reached) else None,
            "mean_seconds_per_epoch": float(np.mean([r["seconds"] for run in group
                                                      for r in run["epochs"]])),
        }
    return summary
