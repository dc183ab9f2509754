"""How high may the learning rate go? BN, GN and LN (no L1) at batch 64 over a range of peak LRs.

    python -m lab.lr_range --data-dir DIR                    # Adam, peak LR 0.0003 to 0.3: 63 runs of 3 epochs
    python -m lab.lr_range --optimizer sgd --data-dir DIR    # SGD with momentum, peak LR 0.003 to 1.0

The study's recipe (one-cycle schedule, batch 64, augmentation, dropout) for 3 epochs, 3 seeds per
point. Nothing is selected here, so the test set reports. A run whose loss stops being finite is
recorded as diverged, with the epoch, not dropped. `runner.run_configs` trains and records the runs.
"""
import argparse
import json
import sys
from dataclasses import replace
from itertools import combinations
from pathlib import Path

from plumbing.cli import PATHS_NOTE, add_experiment_flags, check_experiment_args, engine_from_args
from plumbing.config import (COMPARED, EXPERIMENT_EPOCHS, EXPERIMENT_SEEDS, OPTIMIZERS, PLAIN, RESULTS_DIR, VARIANTS,
                             Config, default_data_dir)
from plumbing.results import diverged_seeds, finished, group_by, over_seeds, run_key
from lab.sections import machines, read, seeds_line, welch_table
# torch (runner) and matplotlib (plots) are imported where runs train and the figure is drawn

SEEDS, EPOCHS = EXPERIMENT_SEEDS, EXPERIMENT_EPOCHS
LRS = {"adam": (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3), "sgd": (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)}
USABLE = 1.5  # an LR is usable when no seed diverged and the mean test error is within 1.5x the norm's best
RESULTS = f"{RESULTS_DIR}/lr_range.json"
PAGE = "docs/learning_rate.md"
OPTIMIZER_NAMES = {"adam": "Adam", "sgd": "SGD"}


def lr_range_configs(base, optimizer="adam", seeds=SEEDS, norms=COMPARED, lrs=None):
    """Every norm (keys of PLAIN) at every peak LR for every seed, seed-major; no L1."""
    return [replace(base, **VARIANTS[norm].settings, lr=lr, optimizer=optimizer, seed=seed, l1=0.0)
            for seed in seeds for lr in (lrs or LRS[optimizer]) for norm in norms]


def run_order(run):
    c = run["config"]
    return OPTIMIZERS.index(c.get("optimizer", "adam")), c["seed"], c["lr"], PLAIN.index(run_key(run))


def summarize(runs):
    """Per optimizer, norm and LR: final test accuracy over the seeds that finished, and which diverged."""
    groups = group_by(runs, lambda run: (run["config"].get("optimizer", "adam"), run_key(run), run["config"]["lr"]))
    summary = []
    for (optimizer, norm, lr), group in sorted(groups.items(), key=lambda g: (OPTIMIZERS.index(g[0][0]),
                                                                               PLAIN.index(g[0][1]), g[0][2])):
        final = [run["epochs"][-1]["test_acc"] for run in finished(group)]
        entry = {"optimizer": optimizer, "norm": norm, "lr": lr, "epochs": group[0]["config"]["epochs"],
                 "seeds": [r["config"]["seed"] for r in group], "diverged": diverged_seeds(group)}
        if final:
            entry["test_acc"] = over_seeds(final)
        summary.append(entry)
    for entry in summary:
        entry["usable"] = is_usable(entry, summary)
    return summary


def is_usable(entry, summary):
    """No seed diverged, and the mean test error is within USABLE times the best of that norm and optimizer."""
    same = [e for e in summary if (e["optimizer"], e["norm"]) == (entry["optimizer"], entry["norm"])
            and "test_acc" in e and not e["diverged"]]
    if entry["diverged"] or "test_acc" not in entry or not same:
        return False
    best_error = min(100 - e["test_acc"]["mean"] for e in same)
    return 100 - entry["test_acc"]["mean"] <= USABLE * best_error


def usable_range(summary, optimizer, norm):
    """'0.001-0.03' (the lowest and highest usable LR), or '-' when none is."""
    lrs = [e["lr"] for e in summary if (e["optimizer"], e["norm"]) == (optimizer, norm) and e["usable"]]
    return f"{min(lrs):g}-{max(lrs):g}" if lrs else "-"


def lr_range_table(summary):
    """Markdown: one row per optimizer and LR, test accuracy per norm (mean ± std, diverged seeds); usable ranges."""
    norms = [n for n in PLAIN if any(e["norm"] == n for e in summary)]
    by_point = {(e["optimizer"], e["lr"], e["norm"]): e for e in summary}
    lines = ["| optimizer | peak LR | " + " | ".join(f"{VARIANTS[n].label} test acc %" for n in norms) + " |",
             "|---|---:|" + "---:|" * len(norms)]
    for optimizer, lr in sorted({(o, lr) for o, lr, _ in by_point}, key=lambda k: (OPTIMIZERS.index(k[0]), k[1])):
        lines.append(f"| {optimizer} | {lr:g} | " + " | ".join(cell(by_point.get((optimizer, lr, n))) for n in norms)
                     + " |")
    for optimizer in sorted({o for o, _, _ in by_point}, key=OPTIMIZERS.index):
        lines.append(f"| {optimizer} | **usable range** | "
                     + " | ".join(f"**{usable_range(summary, optimizer, n)}**" for n in norms) + " |")
    return "\n".join(lines)


def cell(entry):
    if entry is None:
        return "-"
    text = f"{entry['test_acc']['mean']:.2f} ± {entry['test_acc']['std']:.2f}" if "test_acc" in entry else ""
    if entry["diverged"]:
        text += f" ({len(entry['diverged'])} of {len(entry['seeds'])} diverged)"
    return text.strip() + (" ✓" if entry["usable"] else "")


def lr_range_section(results):
    """The LR range's table, and how many runs, seeds and machines stand behind it."""
    lr = read(results, "lr_range.json")
    runs, first = lr["runs"], lr["runs"][0]
    diverged = sum("diverged" in run for run in runs)
    return "\n".join([
        lr_range_table(lr["summary"]), "",
        f"From `results/lr_range.json`: {len(runs)} runs of {first['config']['epochs']} epochs at batch "
        f"{first['config']['batch_size']} ({seeds_line(runs)}; mean ± std over seeds; {diverged} diverged), "
        f"device `{first['device']}`, torch {first['torch']}, {first['threads']} torch thread per run, on "
        f"{machines(runs)}. ✓: usable, a mean test error within 1.5x of that norm's best."])


# ---- how far the seeds carry the comparisons (docs/protocol.md, rule 7: Welch, these runs are not paired) ----------
def per_seed(runs):
    """{(optimizer, norm, lr): final test accuracies of the seeds that finished, by seed}: what Welch compares."""
    groups = group_by(sorted(finished(runs), key=lambda run: run["config"]["seed"]),
                      lambda run: (run["config"].get("optimizer", "adam"), run_key(run), run["config"]["lr"]))
    return {point: [run["epochs"][-1]["test_acc"] for run in group] for point, group in groups.items()}


def best_lrs(summary, optimizer):
    """{norm: the LR of its highest mean test accuracy with `optimizer`}, an LR with a diverged seed never counted:
    picked on the test set, so a comparison with it leans towards "separated"."""
    done = [e for e in summary if e["optimizer"] == optimizer and "test_acc" in e and not e["diverged"]]
    return {norm: max((e for e in done if e["norm"] == norm), key=lambda e: e["test_acc"]["mean"])["lr"]
            for norm in dict.fromkeys(e["norm"] for e in done)}


def point_name(point):
    optimizer, norm, lr = point
    return f"{VARIANTS[norm].label} at {OPTIMIZER_NAMES[optimizer]} {lr:g}"


def welch_pairs(values, point_pairs):
    """welch_table's (name A, seeds A, name B, seeds B) for each (A, B) whose points both have 2 or more seeds."""
    return [(point_name(a), values[a], point_name(b), values[b]) for a, b in point_pairs
            if len(values.get(a, ())) > 1 and len(values.get(b, ())) > 1]


def optimizer_comparisons(values, optimizer, best):
    """[(title, [(point A, point B), ...], family)] for one optimizer: BN − GN, BN − LN and GN − LN at each LR
    (family: the pairs at one LR) and at each norm's best LR (family: those pairs); each norm at the highest LR
    against its own best (family: the norms compared there; a norm at its best there has no row)."""
    lrs = sorted({lr for o, _, lr in values if o == optimizer})
    norms = [n for n in COMPARED if any(point[:2] == (optimizer, n) for point in values)]
    at_lr = [list(combinations([(optimizer, n, lr) for n in norms], 2)) for lr in lrs]
    ranked = [n for n in norms if n in best]
    at_best = list(combinations([(optimizer, n, best[n]) for n in ranked], 2))
    top = [((optimizer, n, lrs[-1]), (optimizer, n, best[n])) for n in ranked if best[n] != lrs[-1]]
    name = OPTIMIZER_NAMES[optimizer]
    return [(f"{name}, the norms at each peak LR, each LR adjusted on its own", sum(at_lr, []), len(at_lr[0])),
            (f"{name}, each norm at its best LR", at_best, len(at_best)),
            (f"{name} at {lrs[-1]:g}, each norm against its own best LR", top, len(top))]


def comparisons(values, summary):
    """[(title, [(point A, point B), ...], family)]: what the page's verdicts rest on: each optimizer's
    comparisons, then each norm's best LR with SGD against its best with Adam (family: the norms)."""
    best = {optimizer: best_lrs(summary, optimizer) for optimizer in OPTIMIZERS}
    found = [c for optimizer in OPTIMIZERS if best[optimizer]
             for c in optimizer_comparisons(values, optimizer, best[optimizer])]
    across = [(("sgd", n, best["sgd"][n]), ("adam", n, best["adam"][n])) for n in COMPARED
              if n in best["sgd"] and n in best["adam"]]
    return [c for c in found + [("each norm's best LR, SGD against Adam", across, len(across))] if c[1]]


def lr_welch_section(results):
    """Welch tables of the LR range's comparisons, each Bonferroni-adjusted over its stated family."""
    lr = read(results, "lr_range.json")
    values = per_seed(lr["runs"])
    tables = [(title, welch_pairs(values, point_pairs), family)
              for title, point_pairs, family in comparisons(values, lr["summary"])]
    return "\n\n".join(f"*{title}* (family: {family} comparison{'s' * (family > 1)}):\n\n{welch_table(pairs, family)}"
                       for title, pairs, family in tables if pairs)


SECTIONS = {"LR_RANGE": lr_range_section, "LR_WELCH": lr_welch_section}  # block name -> the function that writes it


# ---- the learning-rate range -----------------------------------------------------------------
def plot_lr_range(summary):
    """Test error against peak LR (log-log), one panel per optimizer, one line per norm; x: a seed diverged."""
    optimizers = list(dict.fromkeys(e["optimizer"] for e in summary))
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter
    from lab.figures import DPI, by_norm, plain_log_axis
    fig, axes = plt.subplots(1, len(optimizers), figsize=(7 * len(optimizers), 5), dpi=DPI, squeeze=False)
    for ax, optimizer in zip(axes[0], optimizers):
        for norm, entries in by_norm([e for e in summary if e["optimizer"] == optimizer]).items():
            color, done = VARIANTS[norm].color, [e for e in entries if "test_acc" in e]
            lrs = [e["lr"] for e in done]
            ax.plot(lrs, [100 - e["test_acc"]["mean"] for e in done], marker="o", ms=4, color=color,
                    label=VARIANTS[norm].label)
            ax.fill_between(lrs, [100 - e["test_acc"]["max"] for e in done], [100 - e["test_acc"]["min"] for e in done],
                            color=color, alpha=0.15)
            diverged = [e["lr"] for e in entries if e["diverged"]]
            ax.plot(diverged, [90] * len(diverged), "x", ms=9, mew=2, color=color,
                    label=f"{VARIANTS[norm].label}: a seed diverged" if diverged else None)
        seeds = max(len(e["seeds"]) for e in summary)
        ax.set_xscale("log")
        plain_log_axis(ax)
        ax.set(title=f"{optimizer.upper() if optimizer == 'sgd' else 'Adam'}: test error after "
                     f"{summary[0]['epochs']} epochs, mean of {seeds} seeds (band: min-max)",
               xlabel="peak learning rate of the one-cycle schedule (log scale)", ylabel="test error (%, log scale)")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=9)
    fig.tight_layout()
    return fig


def redraw(results_dir, images_dir, data_dir=None):
    """The LR-range figure from results_dir/lr_range.json; returns [its path] ([] without the file)."""
    path = Path(results_dir) / Path(RESULTS).name
    return [redraw_lr_range(path, images_dir)] if path.exists() else []


def redraw_lr_range(results_path, images_dir):
    """images_dir/lr_range.png from the LR-range results file; returns its path."""
    import matplotlib.pyplot as plt
    from lab.figures import save_figures
    fig = plot_lr_range(json.loads(Path(results_path).read_text())["summary"])
    path = save_figures({"lr_range": fig}, images_dir)[0]
    plt.close(fig)
    return path


def make_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=PATHS_NOTE,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add = p.add_argument
    add("--optimizer", default="adam", choices=OPTIMIZERS, help="optimizer of every run")
    add("--lrs", type=float, nargs="+", default=None, help="peak LRs (unset: " + "; ".join(
        f"{o}: {', '.join(map(str, lrs))}" for o, lrs in LRS.items()) + ")")
    add_experiment_flags(p, COMPARED, "runs/lr_range", RESULTS, "results JSON (runs of every optimizer share it)",
                         "lr_range.png")
    return p


def main(argv=None):
    parser = make_parser()
    args = parser.parse_args(argv)
    check_experiment_args(parser, args)
    if min(args.lrs or [1]) <= 0:
        parser.error("every --lrs value must be > 0")
    from lab.runner import run_command, run_configs
    base = Config(epochs=args.epochs, data_dir=args.data_dir or default_data_dir(), device=args.device)
    configs = lr_range_configs(base, args.optimizer, args.seeds, args.norms, args.lrs)
    results = Path(args.results)
    code = run_command(lambda: run_configs(configs, results, summarize, engine_from_args(args), order=run_order),
                       results, base.data_dir, args.device, args.address)
    if code == 0:
        print(lr_range_table(json.loads(results.read_text())["summary"]))
        print(f"wrote {redraw_lr_range(results, args.images)}")
    return code


if __name__ == "__main__":
    sys.exit(main())
