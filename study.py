"""The study: GN, LN and BN+L1 for several seeds, each a `utils.fit` run, and its summary over seeds."""
import statistics
from dataclasses import replace
from pathlib import Path

import numpy as np

from system import new_run_dir, save_json
from utils import continue_or_new_run_dir, fit

STUDY_L1 = 1e-5  # the L1 lambda of the study's BN+L1 variant (chosen on validation, see README)
# key -> (label on figures, settings that differ from the shared recipe)
VARIANTS = {
    "gn": ("GN", {"norm": "gn"}),
    "ln": ("LN", {"norm": "ln"}),
    "bn_l1": ("BN+L1", {"norm": "bn", "l1": STUDY_L1}),
}
TARGET_ACC = 99.4  # percent; the accuracy goal the summary tracks


def study_configs(base, seeds):
    """(key, label, config) of every variant for every seed, seed-major."""
    for seed in seeds:
        for key, (label, overrides) in VARIANTS.items():
            yield key, label, replace(base, seed=seed, **overrides)


def run_study(base, seeds, splits, out, l1=None, overwrite=False, progress=True, log=print, reuse=False):
    """Fit GN, LN and BN+L1 for every seed; returns (runs, {label: first seed's model}).

    `l1` replaces the BN+L1 lambda (default STUDY_L1); each run keeps its own folder in `out`.
    With `reuse`, a folder that holds a run of the same config is continued (or, if finished,
    loaded) instead of trained again.
    """
    runs, models = [], {}
    for key, label, config in study_configs(base, seeds):
        if l1 is not None and config.l1:
            config = replace(config, l1=l1)
        name = f"{key}_seed{config.seed}"
        run_dir = (continue_or_new_run_dir(out, name, config, overwrite) if reuse
                   else new_run_dir(out, name, overwrite))
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
