"""The study's figures and the drawing helpers every experiment's figure uses; drawn from result files and saved
weights alone, no training. Each experiment module draws its own figure; `python plots.py` redraws them all.
"""
import json
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter
import numpy as np
import torch

from lab.runner import load_model
from plumbing.config import VARIANTS
from plumbing.data import MNIST_MEAN, MNIST_STD, DeviceLoader, eval_batch_size, load_mnist_split, to_device
from plumbing.results import by_variant, group_by, model_path, run_key
from plumbing.system import atomic_write

DPI = 120  # fixed, so the same metrics give the same PNG size
COLORS = {v.label: v.color for v in VARIANTS.values()}  # by label: "BN+L1" -> its colour


def curves(runs, key):
    """{label: (params, epochs x seeds array)} of metric `key` for every variant in `runs`."""
    return {label: (group[0]["params"], np.array([[row[key] for row in run["epochs"]] for run in group]).T)
            for label, group in by_variant(runs).items()}


def zoom(means, percent):
    """y-limits around the last 60% of epochs of every curve, where the variants differ."""
    tail = np.concatenate([m[int(0.4 * len(m)):] for m in means])
    low, high = tail.min(), tail.max()
    pad = 0.15 * (high - low) or 0.1
    return low - pad, min(high + pad, 100.0) if percent else high + pad


def plot_metric(runs, key, title, ylabel, percent=False, ax=None, log=False, elsewhere=None):
    """All variants' `key` per epoch on one axes: mean over seeds, min-max band, final and best in the legend.

    log=True: every epoch on a log y axis; else the y axis zooms to the last epochs and the title says
    which epochs it leaves out (and `elsewhere`, where they are shown). The legend sits below the axes, so it covers no data.
    """
    fig, ax = plt.subplots(figsize=(8, 6), dpi=DPI) if ax is None else (ax.figure, ax)
    fmt = "{:.2f}%" if percent else "{:.4f}"
    series = curves(runs, key)
    means = {label: values.mean(1) for label, (_, values) in series.items()}
    rank = {label: i for i, label in enumerate(sorted(means, key=lambda k: means[k][-1]))}
    seeds = max(values.shape[1] for _, values in series.values())
    for label, (params, values) in series.items():
        epochs, mean = np.arange(1, len(values) + 1), means[label]
        best = mean.max() if percent else mean.min()
        color = COLORS.get(label)
        ax.plot(epochs, mean, marker="o", ms=3, color=color,
                label=f"{label} ({params:,} params): final {fmt.format(mean[-1])}, best {fmt.format(best)}")
        if values.shape[1] > 1:
            ax.fill_between(epochs, values.min(1), values.max(1), color=color, alpha=0.15)
        offset = 11 * (rank[label] - (len(rank) - 1) / 2)  # points; keeps close final values apart
        ax.annotate(fmt.format(mean[-1]), (epochs[-1], mean[-1]), xytext=(8, offset),
                    textcoords="offset points", va="center", fontsize=9, color=color)
    if log:
        plain_log_axis(ax)
    else:
        low, high = zoom(means.values(), percent)
        ax.set_ylim(low, high)
        hidden = sorted({int(e) + 1 for m in means.values() for e in np.flatnonzero((m < low) | (m > high))})
        if hidden:
            title += f"\n(the mean of epochs {epoch_ranges(hidden)} lies outside this axis" + (
                f"; {elsewhere})" if elsewhere else ")")
    ax.set_xlim(0.5, len(mean) + 2.5)  # room for the final-value labels
    ax.set(title=title, xlabel="epoch", ylabel=ylabel)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3, which="both" if log else "major")
    legend_below(ax, seeds)
    fig.tight_layout()
    return fig


def legend_below(ax, seeds):
    """The axes' legend under it, with a grey patch for the seed band, in columns that fit the width."""
    from matplotlib.patches import Patch
    handles, labels = ax.get_legend_handles_labels()
    if seeds > 1:
        handles.append(Patch(color="grey", alpha=0.25))
        labels.append(f"band: min-max over {seeds} seeds (line: their mean)")
    ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.13), fontsize=9, ncol=1, frameon=False)


def epoch_ranges(epochs):
    """'1-3, 5' for [1, 2, 3, 5]."""
    parts, start = [], epochs[0]
    for previous, current in zip(epochs, epochs[1:] + [None]):
        if current != previous + 1:
            parts.append(f"{start}-{previous}" if previous > start else f"{start}")
            start = current
    return ", ".join(parts)


def plain_log_axis(ax):
    """A log y axis whose ticks read 0.5, 1, 2, 5 rather than 5x10^-1."""
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if leading_digit(v) in (2, 5) else ""))


def leading_digit(value):
    """2 for 0.02, 20 or 2.0: the first significant digit of a positive number."""
    return int(f"{value:e}"[0]) if value > 0 else 0


def plot_error_log(runs, ax):
    """Test error (100 - accuracy, %) of every epoch on a log axis: the early epochs the zoom leaves out."""
    for label, (_, values) in curves(runs, "test_acc").items():
        error = 100.0 - values
        epochs = np.arange(1, len(error) + 1)
        ax.plot(epochs, error.mean(1), marker="o", ms=3, color=COLORS.get(label), label=label)
        if error.shape[1] > 1:
            ax.fill_between(epochs, error.min(1), error.max(1), color=COLORS.get(label), alpha=0.15)
    plain_log_axis(ax)
    ax.set(title="Test error, every epoch (log scale)", xlabel="epoch", ylabel="test error (%, log scale)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3, which="both")
    legend_below(ax, max(values.shape[1] for _, values in curves(runs, "test_acc").values()))


def plot_accuracy(runs):
    """Graph 2: test accuracy zoomed to where the curves end (left), test error of every epoch (right)."""
    fig, (zoomed, whole) = plt.subplots(1, 2, figsize=(14, 6.5), dpi=DPI, width_ratios=(3, 2))
    plot_metric(runs, "test_acc", "Graph 2: test accuracy per epoch (zoomed to the last epochs)", "accuracy (%)",
                percent=True, ax=zoomed, elsewhere="see the right panel")
    plot_error_log(runs, whole)
    fig.tight_layout()
    return fig


def plot_train_vs_test(runs):
    """2x2 panel: train/test loss and accuracy of every variant (mean over seeds)."""
    fig, axes = plt.subplots(2, 2, figsize=(11, 8), dpi=DPI, sharex=True)
    for ax, key in zip(axes.flat, ("train_loss", "test_loss", "train_acc", "test_acc")):
        means = {label: values.mean(1) for label, (_, values) in curves(runs, key).items()}
        for label, mean in means.items():
            ax.plot(np.arange(1, len(mean) + 1), mean, color=COLORS.get(label), label=label)
        split, metric = key.split("_")
        ax.set(title=f"{split} {'loss' if metric == 'loss' else 'accuracy'}", xlabel="epoch",
               ylabel="cross-entropy" if metric == "loss" else "accuracy (%)")
        ax.set_ylim(*zoom(means.values(), percent=metric == "acc"))
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=10, frameon=False)
    fig.suptitle("Train vs. test (mean over seeds; y zoomed to the last 60% of epochs): training sees augmented\n"
                 "images and dropout, so its accuracy runs below test")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def plot_misclassified(found, label, test_acc):
    """A 5x2 grid of misclassified test images, each tile titled with true and predicted label."""
    fig, axes = plt.subplots(5, 2, figsize=(5, 12), dpi=DPI)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= len(found["true"]):
            continue
        image = (found["images"][i, 0] * MNIST_STD + MNIST_MEAN).clamp(0, 1)  # undo the normalization
        ax.imshow(image.numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"true {found['true'][i]}, predicted {found['pred'][i]}\n"
                     f"confidence {100 * found['confidence'][i]:.0f}%", fontsize=10)
    fig.suptitle(f"{label}: 10 misclassified test images\n(test accuracy {test_acc:.2f}%)", fontsize=12)
    fig.tight_layout()
    return fig


@torch.no_grad()
def collect_misclassified(model, loader, limit=10):
    """The first `limit` wrong test predictions: {'images', 'true', 'pred', 'confidence'} on the CPU."""
    model.eval()
    device = next(model.parameters()).device
    found = {"images": [], "true": [], "pred": [], "confidence": []}
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        confidence, pred = model(x).softmax(1).max(1)
        wrong = pred != y
        for key, value in zip(found, (x, y, pred, confidence)):
            found[key].append(value[wrong].cpu())
        if sum(len(t) for t in found["true"]) >= limit:
            break
    return {key: torch.cat(value)[:limit] for key, value in found.items()}


def curve_figures(runs):
    """{file stem: figure} of the graphs drawn from per-epoch metrics alone."""
    return {
        "test_loss": plot_metric(runs, "test_loss", "Graph 1: test loss per epoch (log scale)",
                                 "cross-entropy, mean over all 10,000 test images (log scale)", log=True),
        "test_accuracy": plot_accuracy(runs),
        "train_vs_test": plot_train_vs_test(runs),
    }


def misclassified_figures(runs, models_dir, test_split):
    """{file stem: 5x2 grid} of the first seed's model of every variant, its weights read from `models_dir`."""
    loader = DeviceLoader(*test_split, batch_size=eval_batch_size(test_split[0].device))
    figures = {}
    for label, group in by_variant(runs).items():
        first_seed = group[0]
        found = collect_misclassified(load_model(model_path(models_dir, first_seed), first_seed["config"]), loader)
        figures[f"misclassified_{run_key(first_seed)}"] = plot_misclassified(
            found, f"{label}, seed {first_seed['config']['seed']}", first_seed["epochs"][-1]["test_acc"])
    return figures


def study_figures(results_dir, data_dir, name="study.json"):
    """{file stem: figure} of the study, from results_dir/study.json and the weights in results_dir/models."""
    runs = json.loads((Path(results_dir) / name).read_text())["runs"]
    test_split = to_device(*load_mnist_split(data_dir, train=False), torch.device("cpu"))
    figures = {**curve_figures(runs), **misclassified_figures(runs, Path(results_dir) / "models", test_split)}
    for fig in figures.values():
        plt.close(fig)  # a notebook shows each one where it asks, with display(fig)
    return figures


def by_norm(summary, keys=None):
    """{norm key: its entries} in the summary's order; only `keys` (of config.PLAIN) when given."""
    return group_by([entry for entry in summary if keys is None or entry["norm"] in keys], lambda entry: entry["norm"])


NOTEBOOK_DPI = 90  # figures shown in the notebook: lighter than the files in images/, so the saved notebook stays small


def png(fig):
    """The figure as PNG bytes at NOTEBOOK_DPI: a notebook shows them with IPython.display.Image(data=...),
    which GitHub renders in the saved notebook (a closed figure passed to display() is saved as text only)."""
    import io
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=NOTEBOOK_DPI)
    return buffer.getvalue()


def save_figures(figures, images_dir):
    """Write each figure as images_dir/<stem>.png at the fixed DPI; returns the paths."""
    images_dir = Path(images_dir)
    images_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for stem, fig in figures.items():
        paths.append(images_dir / f"{stem}.png")
        atomic_write(paths[-1], lambda file: fig.savefig(file, format="png", dpi=DPI))  # noqa: B023
    return paths


# ---- redrawing from committed files ----------------------------------------------------
