"""Where BN, GN and LN part ways: a batch-size sweep, the same at equal steps, and the LR rule behind both.

    python -m lab.sweep --data-dir DIR                 # the whole sweep; run it again to go on after a stop
    python -m lab.sweep --equal-steps --data-dir DIR   # batch 128-512 trained for the steps of batch 64
    python -m lab.sweep --select-lr --data-dir DIR     # the validation runs that chose the LR rule
    python -m lab.sweep --own-lr --data-dir DIR        # equal steps at 512 with each norm's own best LR rule

Every run is a `utils.fit` run without L1, so only the normalization differs; `runner.run_configs`
trains them (on every core by default, or on a Ray cluster with --address) and records each in the
results file as it finishes, so the command can be stopped and started again. BN runs also record
their test accuracy with batch statistics and with recomputed running statistics (bn_stats.py).
"""
import argparse
import json
import math
import statistics
import sys
from dataclasses import replace
from itertools import combinations
from pathlib import Path

from plumbing.cli import PATHS_NOTE, add_experiment_flags, check_experiment_args, engine_from_args
from plumbing.config import (BATCH_SIZES, COMPARED, DEFAULTS, EXPERIMENT_EPOCHS, EXPERIMENT_SEEDS, GN_FAMILY,
                             GN_FAMILY_ADDED, NORM_COSTS_FILE, PLAIN, RESULTS_DIR, TRAIN_IMAGES, VARIANTS, Config,
                             default_data_dir, variant_key)
from plumbing.results import diverged_seeds, finished, group_by, over_seeds, run_key
from lab.sections import hardware_line, machines, needs, read, seeds_line, welch_table, where_line
# torch (runner, bn_stats) and matplotlib (plots) are imported where runs train and figures are drawn: the
# tables and summaries need neither, and --help or a bad flag is answered before them

SEEDS, EPOCHS = EXPERIMENT_SEEDS, EXPERIMENT_EPOCHS  # the same budget at every batch size
BASE_LR, BASE_BATCH, LR_CAP = DEFAULTS.lr, DEFAULTS.batch_size, 0.05  # the study's peak LR at its batch, a ceiling
LR_RULES = {"constant": lambda b: 1.0, "sqrt": lambda b: math.sqrt(b / BASE_BATCH),
            "linear": lambda b: b / BASE_BATCH}
LR_RULE = "constant"  # chosen on the validation split by --select-lr: results/batch_size_lr_rule.json
SELECTION_BATCH_SIZES, SELECTION_VAL_SPLIT = (512, 4), 10_000
EQUAL_STEPS_BATCH_SIZES = (128, 256, 512)  # trained for as many steps as batch 64 took in EPOCHS epochs
RESULTS = {name: f"{RESULTS_DIR}/batch_size_{file}.json" for name, file in
           [("sweep", "sweep"), ("equal_steps", "equal_steps"), ("select_lr", "lr_rule"), ("own_lr", "own_lr")]}
PAGE = "docs/batch_size.md"  # the GN family's table, from the same sweep, is on docs/gn_family.md


def peak_lr(batch_size, rule=LR_RULE):
    """The peak learning rate of the one-cycle schedule for `batch_size` under `rule`, capped."""
    return min(LR_CAP, BASE_LR * LR_RULES[rule](batch_size))


def sweep_configs(base, seeds=SEEDS, batch_sizes=BATCH_SIZES, norms=COMPARED):
    """Every run of the sweep, seed-major, so a partial sweep already holds whole seeds. `norms`: keys of PLAIN."""
    return [replace(base, **VARIANTS[norm].settings, batch_size=b, lr=peak_lr(b), seed=seed, l1=0.0)
            for seed in seeds for b in batch_sizes for norm in norms]


def selection_configs(base, norms=COMPARED):
    """The LR-rule selection runs: every rule and norm at the batch sizes where the rules differ most."""
    return [replace(base, **VARIANTS[norm].settings, batch_size=b, lr=peak_lr(b, rule), seed=0, l1=0.0,
                    val_split=SELECTION_VAL_SPLIT)
            for b in SELECTION_BATCH_SIZES for norm in norms for rule in LR_RULES]


def equal_steps_configs(base, seeds=SEEDS, batch_sizes=EQUAL_STEPS_BATCH_SIZES, norms=COMPARED):
    """Large batches trained for the steps batch 64 takes in EPOCHS epochs: EPOCHS * b / 64 epochs."""
    return [replace(config, epochs=base.epochs * config.batch_size // BASE_BATCH)
            for config in sweep_configs(base, seeds, batch_sizes, norms)]


def best_rules(selection, batch_size):
    """Per norm, the LR rule with the highest validation accuracy at `batch_size` in a selection summary."""
    points = {norm: f"{norm}/{batch_size}" for norm in PLAIN}
    return {norm: max(selection, key=lambda s: s["val_acc"][point])["rule"]
            for norm, point in points.items() if all(point in s["val_acc"] for s in selection)}


def own_lr_configs(base, selection, seeds=SEEDS, batch_sizes=SELECTION_BATCH_SIZES[:1], norms=COMPARED):
    """Equal steps with each norm's own best LR rule from the selection, for the norms whose rule is not LR_RULE
    (the others' runs are the equal-steps runs themselves)."""
    configs = []
    for config in equal_steps_configs(base, seeds, batch_sizes, norms):
        rule = best_rules(selection, config.batch_size).get(variant_key(config))
        if rule is None:
            raise ValueError(f"the LR-rule selection has no {VARIANTS[variant_key(config)].label} at batch "
                             f"{config.batch_size}")
        if rule != LR_RULE:
            configs.append(replace(config, lr=peak_lr(config.batch_size, rule)))
    return configs


def run_order(run):
    c = run["config"]
    return c["seed"], c["batch_size"], PLAIN.index(run_key(run)), c["lr"]


def summarize_sweep(runs):
    """Per norm (key of PLAIN) and batch size: the final test accuracy over the seeds that finished, seconds
    per epoch, BN's other accuracies, and the seeds that diverged (their loss stopped being finite)."""
    groups = group_by(runs, lambda run: (run_key(run), run["config"]["batch_size"]))
    summary = []
    for (norm, batch_size), group in sorted(groups.items(), key=lambda g: (PLAIN.index(g[0][0]), g[0][1])):
        last = [run["epochs"][-1] for run in finished(group)]
        entry = {"norm": norm, "batch_size": batch_size, "lr": group[0]["config"]["lr"],
                 "epochs": group[0]["config"]["epochs"], "seeds": [run["config"]["seed"] for run in group]}
        if last:
            entry["test_acc"] = over_seeds([row["test_acc"] for row in last])
        rows = [row for run in group for row in run["epochs"]]
        entry["seconds_per_epoch"] = statistics.mean(row["seconds"] for row in rows) if rows else None
        for key in ("test_acc_batch_stats", "test_acc_precise_stats"):
            if last and all(key in row for row in last):
                entry[key] = over_seeds([row[key] for row in last])
        if len(last) < len(group):
            entry["diverged"] = diverged_seeds(group)
        summary.append(entry)
    return summary


def summarize_selection(runs):
    """Per LR rule: validation accuracy at every (norm, batch size) and its mean; the best rule first."""
    by_rule = {}
    for run in runs:
        c = run["config"]
        rule = next(r for r in LR_RULES if math.isclose(peak_lr(c["batch_size"], r), c["lr"]))
        by_rule.setdefault(rule, {})[f"{run_key(run)}/{c['batch_size']}"] = run["epochs"][-1]["val_acc"]
    summary = [{"rule": rule, "mean_val_acc": statistics.mean(accs.values()), "val_acc": accs}
               for rule, accs in by_rule.items()]
    return sorted(summary, key=lambda s: -s["mean_val_acc"])


# ---- tables --------------------------------------------------------------------------------------
def pm(spread):
    return f"{spread['mean']:.2f} ± {spread['std']:.2f}"


def acc_cell(entry):
    """'99.41 ± 0.03', with '(k of n diverged)' where seeds diverged; '-' where there is no entry."""
    if entry is None:
        return "-"
    text = pm(entry["test_acc"]) if "test_acc" in entry else ""
    if entry.get("diverged"):
        text += f" ({len(entry['diverged'])} of {len(entry['seeds'])} diverged)"
    return text.strip()


def batch_size_table(summary):
    """A sweep's summary as a Markdown table: one row per batch size, test accuracy per norm and BN's extras."""
    entries = {(e["norm"], e["batch_size"]): e for e in summary}
    norms = [n for n in PLAIN if any(k[0] == n for k in entries)]
    lines = ["| batch | epochs | peak LR | " + " | ".join(f"{VARIANTS[n].label} test acc %" for n in norms)
             + " | BN, batch stats | BN, recomputed stats |", "|---:|---:|---:|" + "---:|" * (len(norms) + 2)]
    for b in sorted({b for _, b in entries}):
        cells = [entries.get((n, b)) for n in norms]
        first, bn = next(e for e in cells if e), entries.get(("bn", b), {})
        extras = [pm(bn[k]) if k in bn else "-" for k in ("test_acc_batch_stats", "test_acc_precise_stats")]
        lines.append(f"| {b} | {first['epochs']} | {first['lr']:.3g} | "
                     + " | ".join(acc_cell(e) for e in cells) + " | " + " | ".join(extras) + " |")
    return "\n".join(lines)


def lr_rule_table(summary):
    """The LR-rule selection as a Markdown table: validation accuracy per rule and point, and the mean."""
    points = list(summary[0]["val_acc"])
    lines = ["| LR rule | " + " | ".join(f"{VARIANTS[p.split('/')[0]].label}, batch {p.split('/')[1]}" for p in points)
             + " | mean |", "|---|" + "---:|" * (len(points) + 1)]
    for s in summary:
        lines.append(f"| {s['rule']} | " + " | ".join(f"{s['val_acc'][p]:.2f}%" for p in points)
                     + f" | {s['mean_val_acc']:.2f}% |")
    return "\n".join(lines)


# ---- report sections: results/batch_size_*.json in the docs -------------------------------------------
def batch_size_section(results):
    """The sweep of BN, GN and LN (the norms added later, at fewer batch sizes, are on the GN-family page)."""
    sweep = read(results, "batch_size_sweep.json")
    runs = [run for run in sweep["runs"] if run_key(run) in COMPARED]
    first, left = runs[0], len(sweep["runs"]) - len(runs)
    others = f"; the file's {left} other runs are on [the GN-family page](gn_family.md)" if left else ""
    return "\n".join([
        batch_size_table([e for e in sweep["summary"] if e["norm"] in COMPARED]), "",
        f"From `results/batch_size_sweep.json`: {len(runs)} runs of BN, GN and LN, {first['config']['epochs']} epochs "
        f"each ({seeds_line(runs)}; mean ± std over seeds{others}), {hardware_line(first)} per run; "
        f"{sum(row['seconds'] for run in runs for row in run['epochs']) / 3600:.1f} hours of training and "
        f"testing in all, two or three runs at a time on the 2-core machine."])


def lr_rule_section(results):
    return lr_rule_table(read(results, "batch_size_lr_rule.json")["summary"])


@needs("batch_size_equal_steps.json", "python -m lab.sweep --equal-steps")
def equal_steps_section(results, equal):
    return "\n".join([batch_size_table(equal["summary"]), "",
                      f"From `results/batch_size_equal_steps.json`: {equal_steps_line(equal)}."])


@needs("batch_size_own_lr.json", "python -m lab.sweep --own-lr")
def own_lr_section(results, own):
    rules = read(results, "batch_size_lr_rule.json")["summary"]
    chosen = sorted({(e["norm"], e["batch_size"]) for e in own["summary"]})
    return "\n".join([
        batch_size_table(own["summary"]), "",
        "From `results/batch_size_own_lr.json`: "
        + ", ".join(f"{n.upper()} with the '{best_rules(rules, b)[n]}' rule (its best at batch {b})" for n, b in chosen)
        + f" in `results/batch_size_lr_rule.json`; {equal_steps_line(own)}."])


def equal_steps_line(results_file):
    """Runs, seeds and spread, steps and hardware of an equal-steps results file."""
    runs, summary = results_file["runs"], results_file["summary"]
    counts = {len(e["seeds"]) for e in summary}
    spread = f"mean ± std over {counts.pop()} seeds" if len(counts) == 1 else (
        "mean ± std over the seeds each point has: "
        + ", ".join(f"{e['norm'].upper()} at {e['batch_size']}: {len(e['seeds'])}" for e in summary)
        + "; a point with one seed shows ± 0.00")
    return (f"{len(runs)} runs ({seeds_line(runs)}; {spread}), each for about the steps of {EPOCHS} epochs at "
            f"batch {BASE_BATCH} ({steps_line(runs)}), {hardware_line(runs[0])} per run")


def steps_line(runs, train_images=TRAIN_IMAGES):
    """The optimizer steps of these runs: full batches per epoch (the last partial one is dropped) x epochs."""
    def steps(c):
        images = min(train_images - c["val_split"], c["train_subset"] or train_images)
        return c["epochs"] * (images // c["batch_size"])
    points = sorted({(r["config"]["batch_size"], steps(r["config"])) for r in runs})
    return (", ".join(f"{s:,} at {b}" for b, s in points)
            + f" against {EPOCHS * (train_images // BASE_BATCH):,} at {BASE_BATCH}")


GROUPS = {"ln": "1 group", "gn2": "2 groups", "gn": "4 groups", "in": "1 channel per group"}


def gn_family_section(results):
    """Test accuracy against the number of groups (LN 1, GN(2) 2, GN 4, IN one per channel) at each batch size."""
    found = (Path(results) / "batch_size_sweep.json").exists()
    sweep = read(results, "batch_size_sweep.json") if found else {"summary": [], "runs": []}
    entries = {(e["norm"], e["batch_size"]): e for e in sweep["summary"]}
    sizes = sorted({b for n, b in entries if n in ("gn2", "in")})
    if not sizes:
        return ("Not run yet: `python -m lab.sweep --norms gn2 in --batch-sizes 2 8 64 512` adds them to "
                "`results/batch_size_sweep.json`.")
    lines = ["| batch | epochs | " + " | ".join(f"{VARIANTS[n].label} ({GROUPS[n]})" for n in GN_FAMILY) + " |",
             "|---:|---:|" + "---:|" * len(GN_FAMILY)]
    for b in sizes:
        lines.append(f"| {b} | {entries[('gn2', b)]['epochs'] if ('gn2', b) in entries else '-'} | "
                     + " | ".join(acc_cell(entries.get((n, b))) for n in GN_FAMILY) + " |")
    runs = [run for run in sweep["runs"] if run_key(run) in GN_FAMILY_ADDED]
    return "\n".join(lines + ["", f"Test accuracy %, mean ± std over seeds, from `results/batch_size_sweep.json` "
                               f"(the sweep's recipe: 3 epochs, peak LR 0.01). GN(2) and IN: {len(runs)} runs "
                               f"({seeds_line(runs)}), {where_line(runs)}; LN and GN are the sweep's own runs."])


# ---- Welch tables: these runs record no machine fingerprint to pair them by (docs/protocol.md, rule 7) ----------
NORM_LABELS = tuple(VARIANTS[key].label for key in COMPARED)  # BN, GN, LN
WELCH_NOTE = ("Welch's interval of two independent groups of seeds (docs/protocol.md, rule 7: runs without a shared "
              "machine fingerprint are never paired), Bonferroni-adjusted over each batch size's family; "
              "\"separated\" means that interval excludes 0, otherwise the table gives the smallest difference these "
              "seeds would detect (80% power at that level)")


def final_accs(runs, key="test_acc", suffix="", by_seed=False):
    """{(label + suffix, batch size): the final `key` of each finished run, in seed order}: what Welch compares;
    with `by_seed` {seed: value} instead of a list, what a paired row compares."""
    accs = {}
    for run in sorted(finished(runs), key=lambda run: run["config"]["seed"]):
        if key in run["epochs"][-1]:
            point = (VARIANTS[run_key(run)].label + suffix, run["config"]["batch_size"])
            accs.setdefault(point, {})[run["config"]["seed"]] = run["epochs"][-1][key]
    return accs if by_seed else {point: list(values.values()) for point, values in accs.items()}


def welch_by_batch(title, accs, comparisons, sizes=None):
    """welch_table of the `comparisons` (pairs of names in `accs`; a third item True: one model tested two ways) at
    each batch size (`sizes`, unset: every size in `accs`), each size's comparisons one Bonferroni family; a pair
    without 2 seeds a side is left out of the rows, not of the family."""
    sizes = sizes or sorted({b for _, b in accs})
    pairs = [(f"batch {b}: {a}", accs[(a, b)], c, accs[(c, b)], *same_models) for b in sizes
             for a, c, *same_models in comparisons if min(len(accs.get((a, b), [])), len(accs.get((c, b), []))) > 1]
    return (f"*{title}* ({len(comparisons)} comparisons at each batch size, one Bonferroni family):\n\n"
            + welch_table(pairs, family=len(comparisons)))


def mixed_machines(runs):
    """'GN(2) at batch 64: seeds 0, 1 on X, seed 2 on Y': every point whose seeds trained on more than one machine."""
    notes = []
    for (key, b), group in group_by(runs, lambda run: (run_key(run), run["config"]["batch_size"])).items():
        where = group_by(sorted(group, key=lambda run: run["config"]["seed"]), lambda run: machines([run]))
        if len(where) > 1:
            notes.append(f"{VARIANTS[key].label} at batch {b}: " + ", ".join(
                f"seed{'s' * (len(g) > 1)} {', '.join(str(r['config']['seed']) for r in g)} on {m}"
                for m, g in where.items()))
    return "; ".join(notes)


def best_points(accs, names):
    """welch_table's pairs between the best batch sizes (highest mean) of `names` in `accs`, every pair of them."""
    best = {n: max((p for p in accs if p[0] == n), key=lambda p: statistics.mean(accs[p])) for n in names}
    return [(f"{a} at batch {best[a][1]}", accs[best[a]], f"{c} at batch {best[c][1]}", accs[best[c]])
            for a, c in combinations(names, 2)]


def batch_size_welch_section(results):
    """BN, GN and LN against each other at every batch size and at their best; BN tested two other ways."""
    runs = read(results, "batch_size_sweep.json")["runs"]
    accs = final_accs(runs)
    tested = {**{p: v for p, v in final_accs(runs, by_seed=True).items() if p[0] in ("BN", "GN")},
              **final_accs(runs, "test_acc_batch_stats", " (batch stats)", by_seed=True),
              **final_accs(runs, "test_acc_precise_stats", " (recomputed stats)", by_seed=True)}
    return "\n".join([
        welch_by_batch("The norms", accs, list(combinations(NORM_LABELS, 2))), "",
        f"*Each norm at its best batch size* (the highest mean; {len(NORM_LABELS)} comparisons, one family):", "",
        welch_table(best_points(accs, NORM_LABELS)), "",
        welch_by_batch("BN tested two other ways, and GN against BN with recomputed statistics", tested,
                       [("BN (batch stats)", "BN", True), ("BN (recomputed stats)", "BN", True),
                        ("GN", "BN (recomputed stats)")]),
        "", f"Final test accuracy % after {EPOCHS} epochs, from `results/batch_size_sweep.json` ({seeds_line(runs)}); "
        f"{WELCH_NOTE}. In the last table BN tested two ways is paired: each seed's model against itself; plain "
        f"\"BN\" there is BN tested with its running averages."])


@needs("batch_size_equal_steps.json", "python -m lab.sweep --equal-steps")
def equal_steps_welch_section(results, equal):
    """BN, GN and LN against each other at equal steps; BN at its own LR (if run) against all three there."""
    accs, files = final_accs(equal["runs"]), ["batch_size_equal_steps.json"]
    lines = [welch_by_batch("Equal steps", accs, list(combinations(NORM_LABELS, 2)))]
    if (Path(results) / "batch_size_own_lr.json").exists():
        files.append("batch_size_own_lr.json")
        own = final_accs(read(results, files[-1])["runs"], suffix=" (own LR)")
        comparisons = [(name, norm) for name in sorted({n for n, _ in own}) for norm in NORM_LABELS]
        lines += ["", welch_by_batch("Own learning rate, against the equal-steps runs", {**accs, **own}, comparisons,
                                     sorted({b for _, b in own}))]
    return "\n".join(lines + ["", f"Final test accuracy %, from {' and '.join(f'`results/{f}`' for f in files)}; "
                                   f"{WELCH_NOTE}."])


def added_welch_section(title, comparisons, added):
    """A section comparing the sweep's later variants (`added`: keys) at the batch sizes where they ran."""
    @needs("batch_size_sweep.json", "python -m lab.sweep")
    def section(results, sweep):
        later = [run for run in sweep["runs"] if run_key(run) in added]
        if not later:
            return f"Not run yet: `python -m lab.sweep --norms {' '.join(added)} --batch-sizes 2 8 64 512`."
        sizes = sorted({run["config"]["batch_size"] for run in later})
        mixed = mixed_machines(later)
        comparators = [run for run in sweep["runs"] if run_key(run) in COMPARED]
        return "\n".join([
            welch_by_batch(title, final_accs(sweep["runs"]), comparisons, sizes), "",
            f"Final test accuracy % after {EPOCHS} epochs, from `results/batch_size_sweep.json`; {WELCH_NOTE}. "
            f"BN, GN and LN are the sweep's runs ({where_line(comparators)}), the others later ones "
            f"({where_line(later)}): a row that sets one of them against BN, GN or LN compares runs of two "
            f"setups." + (f" Points whose seeds trained on two machines: {mixed}." if mixed else "")])
    section.__doc__ = f"{title}: Welch's table at the batch sizes where {', '.join(added)} ran."
    return section


GN_FAMILY_LABELS = tuple(VARIANTS[key].label for key in GN_FAMILY)  # LN, GN(2), GN, IN
gn_family_welch_section = added_welch_section(
    "The GN family, every pair, and IN against BN", [*combinations(GN_FAMILY_LABELS, 2), ("IN", "BN")], GN_FAMILY_ADDED)
no_norm_welch_section = added_welch_section(
    "No norm against each norm", [("no norm", VARIANTS[key].label) for key in (*COMPARED, *GN_FAMILY_ADDED)], ("none",))

# block name -> the function that writes it
SECTIONS = {"BATCH_SIZE": batch_size_section, "BATCH_SIZE_WELCH": batch_size_welch_section,
            "LR_RULE": lr_rule_section, "EQUAL_STEPS": equal_steps_section, "OWN_LR": own_lr_section,
            "EQUAL_STEPS_WELCH": equal_steps_welch_section, "GN_FAMILY": gn_family_section,
            "GN_FAMILY_WELCH": gn_family_welch_section, "NO_NORM_BATCH_WELCH": no_norm_welch_section}


# ---- the batch-size sweep ------------------------------------------------------------------
BN_EXTRAS = {"test_acc_batch_stats": ("--", "BN, tested with batch statistics"),
             "test_acc_precise_stats": (":", "BN, running statistics recomputed after training")}


def plot_error_band(ax, entries, key, color, style, label, marker="o", fill=True):
    """Mean test error over seeds of `key` against batch size, with the min-max range as a band."""
    entries = [e for e in entries if key in e]
    if not entries:
        return
    sizes = [e["batch_size"] for e in entries]
    ax.plot(sizes, [100 - e[key]["mean"] for e in entries], style, marker=marker, ms=5, color=color, label=label,
            mfc=None if fill else "white")
    ax.fill_between(sizes, [100 - e[key]["max"] for e in entries], [100 - e[key]["min"] for e in entries],
                    color=color, alpha=0.15 if style == "-" else 0.07)


BATCH_SIZE_FIGURE = (*COMPARED, "none")  # GN_FAMILY_ADDED (gn2, in) has its own figure: plot_gn_family


def plot_batch_size(sweep, costs=None, equal_steps=None):
    """Test error against the training batch size, one line per norm (left); seconds per epoch (right).

    `equal_steps` (hollow markers): large batches trained for as many steps as batch 64.
    `costs` (bench.py norms, measured side by side on a quiet machine) gives the time panel.
    """
    import matplotlib.pyplot as plt
    from lab.figures import DPI, by_norm, plain_log_axis
    fig, (error_ax, time_ax) = plt.subplots(1, 2, figsize=(14, 5.5), dpi=DPI, width_ratios=(3, 2))
    for norm, entries in by_norm(sweep["summary"], BATCH_SIZE_FIGURE).items():
        color = VARIANTS[norm].color
        plot_error_band(error_ax, entries, "test_acc", color, "-",
                        f"{VARIANTS[norm].label}, {entries[0]['epochs']} epochs")
        for key, (style, label) in BN_EXTRAS.items():
            plot_error_band(error_ax, entries, key, color, style, label)
    for norm, entries in by_norm(equal_steps["summary"] if equal_steps else []).items():
        plot_error_band(error_ax, entries, "test_acc", VARIANTS[norm].color, "-", f"{VARIANTS[norm].label}, the steps of "
                        f"batch 64 ({', '.join(str(e['epochs']) for e in entries)} epochs)", marker="s", fill=False)
    sizes = sorted({e["batch_size"] for e in sweep["summary"]})
    seeds = max(len(e["seeds"]) for e in sweep["summary"])
    epochs = sweep["summary"][0]["epochs"]
    title = (f"Test error, mean over {seeds} seeds (band: min-max)\nfilled markers: after {epochs} epochs; "
             f"hollow: after as many steps as {epochs} epochs at batch 64" if equal_steps else
             f"Test error after {epochs} epochs, mean over {seeds} seeds (band: min-max)")
    error_ax.set(title=title,
                 xlabel="training batch size (log2 scale)", ylabel="test error (%, log scale)")
    plain_log_axis(error_ax)
    if costs:
        plot_costs(time_ax, costs)
    else:
        time_ax.text(0.5, 0.5, "no time measured:\npython bench.py norms", ha="center", va="center",
                     transform=time_ax.transAxes)
    for ax in (error_ax, time_ax):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [str(s) for s in sizes])
        ax.grid(alpha=0.3, which="both")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_costs(ax, costs):
    """Seconds per training epoch of each norm against batch size, from bench.py norms."""
    for norm, by_batch in costs["results"].items():
        sizes = sorted(by_batch, key=int)
        ax.plot([int(b) for b in sizes], [by_batch[b]["train_epoch_s"] for b in sizes], marker="o", ms=4,
                color=VARIANTS[norm].color, label=VARIANTS[norm].label)
    hw = costs["hardware"]
    ax.set(title=f"Training time per epoch (bench.py norms)\n{hw['processor']}, {hw['torch_threads']} "
                 f"thread(s), norms side by side", xlabel="training batch size (log2 scale)",
           ylabel="seconds per epoch (60,000 images)", ylim=(0, None))


def redraw(results_dir, images_dir, data_dir=None):
    """The batch-size figure from results_dir's sweep files; returns [its path] ([] without a sweep)."""
    return [redraw_batch_size(results_dir, images_dir)] if (Path(results_dir) / "batch_size_sweep.json").exists() else []


def redraw_batch_size(results_dir, images_dir, sweep=None, equal_steps=None):
    """images_dir/batch_size.png from results_dir's sweep, equal-steps and norm-cost files; returns its path.

    `sweep`, `equal_steps`: other files than results_dir's batch_size_sweep.json and
    batch_size_equal_steps.json. None (nothing drawn) when there is no sweep: equal steps alone make no figure.
    """
    import matplotlib.pyplot as plt
    from lab.figures import save_figures

    def read(path):
        return json.loads(Path(path).read_text()) if Path(path).exists() else None

    results_dir = Path(results_dir)
    sweep = read(sweep or results_dir / "batch_size_sweep.json")
    if sweep is None:
        return None
    fig = plot_batch_size(sweep, read(results_dir / NORM_COSTS_FILE),
                          read(equal_steps or results_dir / "batch_size_equal_steps.json"))
    path = save_figures({"batch_size": fig}, images_dir)[0]
    plt.close(fig)
    family = plot_gn_family(sweep["summary"])  # once GN(2) or IN have run: images_dir/gn_family.png
    if family is not None:
        save_figures({"gn_family": family}, images_dir)
        plt.close(family)
    return path


def plot_gn_family(summary):
    """Test error against the number of groups, LN (1) -> GN(2) -> GN (4) -> IN (one per channel), one line per
    batch size of the sweep where GN(2) or IN ran; None when neither has run yet."""
    import matplotlib.pyplot as plt
    from lab.figures import DPI, plain_log_axis
    entries = {(e["norm"], e["batch_size"]): e for e in summary if "test_acc" in e}
    sizes = sorted({b for n, b in entries if n in GN_FAMILY_ADDED})
    if not sizes:
        return None
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=DPI)
    ticks = ["1 (LN)", "2", "4 (GN)", "1 channel\nper group (IN)"]
    for b, color in zip(sizes, plt.cm.viridis([0.85 * i / max(1, len(sizes) - 1) for i in range(len(sizes))])):
        points = [(i, entries[(n, b)]["test_acc"]) for i, n in enumerate(GN_FAMILY) if (n, b) in entries]
        xs = [i for i, _ in points]
        ax.plot(xs, [100 - a["mean"] for _, a in points], marker="o", color=color, label=f"batch {b}")
        ax.fill_between(xs, [100 - a["max"] for _, a in points], [100 - a["min"] for _, a in points],
                        color=color, alpha=0.15)
    counts = sorted({len(e["seeds"]) for e in entries.values()})
    seeds = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    epochs = next(iter(entries.values()))["epochs"]
    ax.set(title=f"The GN family: test error after {epochs} epochs, mean of {seeds} seeds (band: min-max)",
           xlabel="groups of GroupNorm (widths 8-16 channels)", ylabel="test error (%, log scale)",
           xticks=range(len(ticks)))
    ax.set_xticklabels(ticks)
    plain_log_axis(ax)
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=len(sizes), frameon=False)
    fig.tight_layout()
    return fig


# ---- the command ------------------------------------------------------------------------------------
def make_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=PATHS_NOTE,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=None,
                   help=f"training batch sizes (unset: {', '.join(map(str, BATCH_SIZES))}; with --equal-steps "
                        f"{', '.join(map(str, EQUAL_STEPS_BATCH_SIZES))})")
    add_experiment_flags(p, COMPARED, "runs/batch_size", None,
                         "results JSON (unset: " + ", ".join(f"{v} ({k})" for k, v in RESULTS.items()) + ")",
                         "batch_size.png", epochs_help="epochs of every run (with --equal-steps: at batch 64)")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--equal-steps", action="store_true", help="large batches for the steps of batch 64 instead")
    what.add_argument("--select-lr", action="store_true", help="the LR-rule selection on the validation split instead")
    what.add_argument("--own-lr", action="store_true",
                      help=f"equal steps at batch {SELECTION_BATCH_SIZES[0]} with each norm's best rule in "
                           f"{RESULTS['select_lr']}, for the norms whose rule is not '{LR_RULE}'")
    return p


def experiment(args):
    """(name, configs, summarize) of what the flags ask for."""
    base = Config(epochs=args.epochs, data_dir=args.data_dir or default_data_dir(), device=args.device)
    if args.select_lr:
        return "select_lr", selection_configs(base, args.norms), summarize_selection
    if args.own_lr:
        selection = json.loads(Path(RESULTS["select_lr"]).read_text())["summary"]
        return "own_lr", own_lr_configs(base, selection, args.seeds, args.batch_sizes or SELECTION_BATCH_SIZES[:1],
                                        args.norms), summarize_sweep
    if args.equal_steps:
        sizes = args.batch_sizes or EQUAL_STEPS_BATCH_SIZES
        return "equal_steps", equal_steps_configs(base, args.seeds, sizes, args.norms), summarize_sweep
    return "sweep", sweep_configs(base, args.seeds, args.batch_sizes or BATCH_SIZES, args.norms), summarize_sweep


def main(argv=None):
    parser = make_parser()
    args = parser.parse_args(argv)
    check_experiment_args(parser, args)
    if min(args.batch_sizes or [1]) < 1:
        parser.error("every --batch-sizes value must be >= 1")
    try:
        name, configs, summarize = experiment(args)
    except (OSError, ValueError) as error:  # --own-lr without a usable selection file
        parser.error(f"{error}; run `python -m lab.sweep --select-lr` first")
    from lab.bn_stats import bn_statistics_metrics
    from lab.runner import run_command, run_configs
    results = Path(args.results or RESULTS[name])
    code = run_command(lambda: run_configs(configs, results, summarize, engine_from_args(args),
                                           measure=bn_statistics_metrics, order=run_order),
                       results, args.data_dir or default_data_dir(), args.device, args.address)
    if code == 0 and name in ("sweep", "equal_steps"):
        path = redraw_batch_size(results.parent, args.images, **{name: results})
        print(f"wrote {path}" if path else f"no batch_size_sweep.json beside {results}: no figure drawn")
    return code


if __name__ == "__main__":
    sys.exit(main())
