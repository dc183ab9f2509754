"""The study's figures, drawn from metrics (lists of per-epoch dicts) and tensors, never globals."""
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from data import MNIST_MEAN, MNIST_STD, DeviceLoader
from experiment import VARIANTS, by_variant
from utils import collect_misclassified, eval_batch_size

DPI = 120  # fixed, so the same metrics give the same PNG size
COLORS = {"GN": "tab:blue", "LN": "tab:orange", "BN+L1": "tab:green"}
FILE_KEYS = {label: key for key, (label, _) in VARIANTS.items()}  # "BN+L1" -> "bn_l1"


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


def plot_metric(runs, key, title, ylabel, percent=False):
    """All variants' `key` per epoch on one axes: mean over seeds, min-max band, final and best in the legend."""
    fig, ax = plt.subplots(figsize=(8, 5), dpi=DPI)
    fmt = "{:.2f}%" if percent else "{:.4f}"
    series = curves(runs, key)
    means = {label: values.mean(1) for label, (_, values) in series.items()}
    rank = {label: i for i, label in enumerate(sorted(means, key=lambda k: means[k][-1]))}
    for label, (params, values) in series.items():
        epochs, mean = np.arange(1, len(values) + 1), means[label]
        best = mean.max() if percent else mean.min()
        seeds = f", mean of {values.shape[1]} seeds" if values.shape[1] > 1 else ""
        color = COLORS.get(label)
        ax.plot(epochs, mean, marker="o", ms=3, color=color,
                label=f"{label} ({params:,} params{seeds}): final {fmt.format(mean[-1])}, "
                      f"best {fmt.format(best)}")
        if values.shape[1] > 1:
            ax.fill_between(epochs, values.min(1), values.max(1), color=color, alpha=0.15)
        offset = 11 * (rank[label] - (len(rank) - 1) / 2)  # points; keeps close final values apart
        ax.annotate(fmt.format(mean[-1]), (epochs[-1], mean[-1]), xytext=(8, offset),
                    textcoords="offset points", va="center", fontsize=9, color=color)
    ax.set_ylim(*zoom(means.values(), percent))
    ax.set_xlim(0.5, len(mean) + 2.5)  # room for the final-value labels
    ax.set(title=title, xlabel="epoch", ylabel=ylabel)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right" if percent else "upper right", fontsize=9)
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
        ax.legend(fontsize=9)
    fig.suptitle("Train vs. test (mean over seeds): training sees augmented images and dropout, "
                 "so its accuracy runs below test")
    fig.tight_layout()
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


def study_figures(runs, models, test_split):
    """{file stem: figure} of the whole study; `models` maps label -> the model whose errors are shown."""
    figures = {
        "test_loss": plot_metric(runs, "test_loss", "Test loss per epoch",
                                 "cross-entropy (mean over all test images)"),
        "test_accuracy": plot_metric(runs, "test_acc", "Test accuracy per epoch", "accuracy (%)",
                                     percent=True),
        "train_vs_test": plot_train_vs_test(runs),
    }
    loader = DeviceLoader(*test_split, batch_size=eval_batch_size(test_split[0].device))
    for label, model in models.items():
        first_seed = next(run for run in runs if run["variant"] == label)
        found = collect_misclassified(model, loader, limit=10)
        key = f"misclassified_{FILE_KEYS.get(label, label.lower())}"
        figures[key] = plot_misclassified(found, f"{label}, seed {first_seed['config']['seed']}",
                                          first_seed["epochs"][-1]["test_acc"])
    for fig in figures.values():
        plt.close(fig)  # a notebook shows each one where it asks, with display(fig)
    return figures


def save_figures(figures, images_dir):
    """Write each figure as images_dir/<stem>.png at the fixed DPI; returns the paths."""
    images_dir = Path(images_dir)
    images_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for stem, fig in figures.items():
        paths.append(images_dir / f"{stem}.png")
        fig.savefig(paths[-1], dpi=DPI)
    return paths
