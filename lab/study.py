"""The study: GN, LN and BN+L1 at one recipe over several seeds; its configs, its summary, its tables and its
report sections.

`runner.run_configs` trains the runs and records them in RESULTS/study.json, with each run's final
weights in RESULTS/models/; `figures.study_figures` draws the figures from those files.
"""
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from plumbing.config import STUDY_VARIANTS, VARIANTS, Engine
from plumbing.results import by_variant, diverged_seeds, finished, over_seeds, run_key
from lab.runner import run_configs
from lab.sections import hardware_line, machines, needs, read, seeds_line, where_line
from plumbing.stats import ALPHA, POWER, welch

TARGET_ACC = 99.4  # percent; the accuracy goal the summary tracks
PAGE = "docs/study.md"  # its sections on runs of other variants (no norm, the GN family) are on docs/gn_family.md


def study_configs(base, seeds, variants=STUDY_VARIANTS, l1=None):
    """Every variant for every seed, seed-major; `l1` replaces the lambda of variants that have one."""
    configs = []
    for seed in seeds:
        for key in variants:
            config = replace(base, seed=seed, **VARIANTS[key].settings)
            configs.append(replace(config, l1=l1) if l1 is not None and config.l1 else config)
    return configs


def results_file(results_dir, variants=STUDY_VARIANTS):
    """RESULTS/study.json for the mission's three variants, RESULTS/study_<keys>.json for others."""
    name = "study" if tuple(variants) == STUDY_VARIANTS else "study_" + "_".join(variants)
    return Path(results_dir) / f"{name}.json"


def run_study(base, seeds, results_dir, variants=STUDY_VARIANTS, l1=None, engine=Engine(), log=print):
    """Train every run of the study not yet recorded; returns all its runs (see runner.run_configs).

    The results file is results_file(results_dir, variants); weights go to results_dir/models;
    `engine` (config.Engine) says where run folders go and how many runs train at once.
    """
    order = {key: i for i, key in enumerate(variants)}
    return run_configs(study_configs(base, seeds, variants, l1), results_file(results_dir, variants), summarize,
                       engine, models_dir=Path(results_dir) / "models",
                       order=lambda run: (run["config"]["seed"], order[run_key(run)]), log=log)


def summary_table(summary):
    """The summary as a Markdown table."""
    lines = [f"| variant | params | final test acc, mean +- std | min | max | seeds | "
             f"first epoch whose mean reaches {TARGET_ACC}% | lowest mean of the last 5 epochs |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for label, s in summary.items():
        seeds = f"{len(s['seeds'])}" + (f" ({len(s['diverged'])} diverged)" if s.get("diverged") else "")
        if s["mean"] is None:
            lines.append(f"| {label} | {s['params']:,} | every seed diverged | - | - | {seeds} | - | - |")
            continue
        lines.append(f"| {label} | {s['params']:,} | {s['mean']:.2f} +- {s['std']:.2f}% | {s['min']:.2f}% "
                     f"| {s['max']:.2f}% | {seeds} | {s['first_epoch_mean_reaches_target'] or '-'} "
                     f"| {s['last5_min_of_mean']:.2f}% |")
    return "\n".join(lines)


def summarize(runs):
    """Per variant: params and mean/std/min/max of the final test accuracy over the seeds that finished,
    and more; `diverged` lists the seeds whose loss stopped being finite (the statistics leave them out,
    and are None where every seed diverged)."""
    summary = {}
    for label, group in by_variant(runs).items():
        done = finished(group)
        final = [run["epochs"][-1]["test_acc"] for run in done]
        rows = [row for run in group for row in run["epochs"]]
        summary[label] = {
            "params": group[0]["params"], "seeds": [run["config"]["seed"] for run in group],
            "final_test_acc": final, **over_seeds(final),
            **curve_summary([[row["test_acc"] for row in run["epochs"]] for run in done]),
            "mean_seconds_per_epoch": float(np.mean([r["seconds"] for r in rows])) if rows else None,
        }
        if len(done) < len(group):
            summary[label]["diverged"] = diverged_seeds(group)
    return summary


def curve_summary(curves):
    """Of the mean test-accuracy curve over seeds: its best, its lowest in the last 5 epochs, and the first
    epoch it reaches TARGET_ACC (None where there are no curves)."""
    if not curves:
        return {"best_epoch_mean": None, "last5_min_of_mean": None, "first_epoch_mean_reaches_target": None}
    mean_curve = np.array(curves).mean(0)
    reached = np.flatnonzero(mean_curve >= TARGET_ACC)
    return {"best_epoch_mean": float(mean_curve.max()), "last5_min_of_mean": float(mean_curve[-5:].min()),
            "first_epoch_mean_reaches_target": int(reached[0]) + 1 if len(reached) else None}


def pairwise(summary):
    """Every pair of variants: Welch's difference of mean final test accuracy over seeds (stats.welch), and
    whether its interval excludes 0 after a Bonferroni correction for the number of pairs ("corrected")."""
    labels = [label for label, s in summary.items() if len(s["final_test_acc"]) > 1]
    pairs = [(a, b) for i, a in enumerate(labels) for b in labels[i + 1:]]
    accs = {label: summary[label]["final_test_acc"] for label in labels}
    return [{"a": a, "b": b, **welch(accs[a], accs[b]),
             "corrected": welch(accs[a], accs[b], alpha=ALPHA / len(pairs))["separated"]} for a, b in pairs]


def pairwise_table(summary):
    """Markdown: each pair's difference of means, its 95% Welch interval (and whether it excludes 0, before and
    after a Bonferroni correction for the pairs), and the smallest difference detectable."""
    pairs = pairwise(summary)
    lines = [f"| pair | seeds | difference of means, points | {100 * (1 - ALPHA):.0f}% interval (Welch) | excludes 0 "
             f"| excludes 0, Bonferroni for {len(pairs)} pairs | smallest detectable difference ({100 * POWER:.0f}% power) |",
             "|---|---:|---:|---:|---|---|---:|"]
    for p in pairs:
        seeds = f"{len(summary[p['a']]['final_test_acc'])} + {len(summary[p['b']]['final_test_acc'])}"
        lines.append(f"| {p['a']} - {p['b']} | {seeds} | {p['difference']:+.3f} | {p['low']:+.3f} to {p['high']:+.3f} "
                     f"| {'yes' if p['separated'] else 'no'} | {'yes' if p['corrected'] else 'no'} | {p['detectable']:.3f} |")
    return "\n".join(lines)


# ---- report sections: results/study*.json in the docs -------------------------------------------------------
def study_section(results):
    study = read(results, "study.json")
    first = study["runs"][0]
    seconds = {label: s["mean_seconds_per_epoch"] for label, s in study["summary"].items()}
    return "\n".join([
        summary_table(study["summary"]), "",
        f"From `results/study.json`: {len(study['runs'])} runs of {len(first['epochs'])} epochs "
        f"({seeds_line(study['runs'])}), "
        f"{where_line(study['runs'])}; "
        f"mean seconds per epoch (train + test, two runs sharing the 2 cores) "
        + ", ".join(f"{label} {s:.1f}" for label, s in seconds.items()) + ".",
    ])


def seeds_section(results):
    """The study's pairwise differences over every seed it holds, and where the seeds were trained."""
    study = read(results, "study.json")
    runs, summary = study["runs"], study["summary"]
    fingerprints = {json.dumps(run.get("fingerprint"), sort_keys=True) for run in runs if "fingerprint" in run}
    unprinted = sum("fingerprint" not in run for run in runs)
    where = f"{machines(runs)}" + (f"; {len(fingerprints)} distinct fingerprint(s) among the runs that record one, "
                                   f"{unprinted} runs from before fingerprints" if fingerprints else "")
    pairs = pairwise(summary)
    widest = max((p["detectable"] for p in pairs), default=float("nan"))
    return "\n".join([
        pairwise_table(summary), "",
        f"From `results/study.json`: {len(runs)} runs ({seeds_line(runs)}); trained on {where}. "
        f"The variants are compared by Welch's interval of two independent groups, not paired by seed "
        f"(docs/protocol.md, rule 7: runs without a fingerprint are never paired). "
        f"{sum(p['separated'] for p in pairs)} of {len(pairs)} pairs have a {100 * (1 - ALPHA):.0f}% interval that "
        f"excludes 0 ({sum(p['corrected'] for p in pairs)} after a Bonferroni correction for {len(pairs)} "
        f"comparisons, the protocol's \"separated\"); these seeds could detect a true difference of about "
        f"{widest:.2f} points or more (the largest of the pairs' detectable differences at 95%)."])


@needs("study_none.json", "python main.py --norm all --variants none --seeds 0 1 2")
def no_norm_section(results, none):
    """No normalization at the study's recipe, in one table with the study's variants."""
    study = read(results, "study.json")["summary"]
    return "\n".join([
        summary_table({**none["summary"], **study}), "",
        f"From `results/study_none.json` ({len(none['runs'])} runs, {seeds_line(none['runs'])}, "
        f"{hardware_line(none['runs'][0])}) and `results/study.json` (every seed it holds)."])


@needs("study_gn2_in.json", "python main.py --norm all --variants gn2 in --seeds 0 1 2")
def gn_family_study_section(results, family):
    """GN(2) and IN at the study's recipe, in one table (and the pairwise Welch table) with LN and GN."""
    study = read(results, "study.json")["summary"]
    by_groups = {label: summary[label] for label, summary in
                 (("LN", study), ("GN(2)", family["summary"]), ("GN", study), ("IN", family["summary"]))
                 if label in summary}
    runs = family["runs"]
    return "\n".join([
        summary_table(by_groups), "", pairwise_table(by_groups), "",
        f"From `results/study_gn2_in.json` ({len(runs)} runs, {seeds_line(runs)}, {where_line(runs)}) and "
        f"`results/study.json` (LN and GN, every seed it holds); in the order of the groups: 1 (LN), 2, 4 (GN), one "
        f"channel per group (IN)."])


# block name -> the function that writes it
SECTIONS = {"RESULTS": study_section, "SEEDS": seeds_section, "NO_NORM": no_norm_section,
            "GN_FAMILY_STUDY": gn_family_study_section}


def redraw(results_dir, images_dir, data_dir):
    """The study's figures (graphs 1 and 2, train vs. test, the misclassified grids) from results_dir/study.json and
    its saved weights, into images_dir; returns their paths ([] without a study.json)."""
    if not (Path(results_dir) / "study.json").exists():
        return []
    from lab.figures import save_figures, study_figures  # matplotlib only where figures are drawn
    return save_figures(study_figures(results_dir, data_dir), images_dir)

