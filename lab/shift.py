"""Where they part ways at test time: the study's models, and BN without L1, on shifted test images.

    python -m lab.shift --data-dir DIR     # every saved model under every shift: results/shift.json,
                                       # images/shift.png, images/shift_examples.png (minutes; no training)

BN normalizes a test image with running averages collected on the training images; GN and LN
normalize every image by its own statistics. Each model is evaluated on the MNIST test set under
every shift of input_shifts.py; BN models three ways: with their running statistics (as deployed),
with each test batch's own statistics (batches of 64, a fixed order), and with statistics re-estimated
on the shifted test images themselves (no labels needed, but a set of shifted images is). The
models come from results/study.json (GN, LN, BN+L1) and results/study_bn.json (BN, trained with
`python main.py --norm all --variants bn`), their weights from results/models/.
"""
import argparse
import json
import statistics
import sys
import time
from functools import lru_cache
from itertools import combinations
from pathlib import Path

from plumbing.cli import DATA_DIR_HELP, PATHS_NOTE, add_engine_flags, check_engine_args
from plumbing.config import IMAGES_DIR, RESULTS_DIR, STUDY_VARIANTS, VARIANTS
from plumbing.results import group_by, model_path, over_seeds, run_key
from plumbing.stats import ALPHA, welch
from lab.sections import read, welch_table


def make_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=PATHS_NOTE,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--results", default=RESULTS_DIR, help="folder with study.json, study_bn.json and models/")
    p.add_argument("--from", dest="sources", nargs="+", default=None, metavar="FILE",
                   help="results files in --results whose saved models to evaluate, instead of the study's two "
                        "(e.g. --results results/guide --from recipe.json: the guide's paired 20-epoch runs); "
                        "the figures are drawn for the study's files only")
    p.add_argument("--images", default=IMAGES_DIR, help="folder for shift.png and shift_examples.png")
    p.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    add_engine_flags(p)
    return p


def parse_args(argv=None):
    parser = make_parser()
    args = parser.parse_args(argv)
    check_engine_args(parser, args)
    return args


if __name__ == "__main__":
    parse_args()  # --help and a bad flag are answered here, before torch and matplotlib are imported below

import torch  # noqa: E402

from lab.bn_stats import evaluate_adapted, evaluate_with_batch_statistics, has_batch_norm  # noqa: E402
from plumbing.data import (DataError, DeviceLoader, default_data_dir, ensure_mnist, ensure_mnist_on_this_node,  # noqa: E402
                  eval_batch_size, load_mnist_split, normalize)
from lab.input_shifts import LEVELS, SHIFTS, shifted  # noqa: E402
from lab.engine import map_tasks  # noqa: E402
from lab.runner import load_model, net_with_weights  # noqa: E402
from lab.study import results_file  # noqa: E402
from plumbing.system import WriteError, cpu_name, save_json  # noqa: E402
from utils import evaluate  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from lab.figures import DPI, plain_log_axis, save_figures  # noqa: E402

STUDIES = (STUDY_VARIANTS, ("bn",))  # the results files whose models are evaluated
BN_MODES = ("running", "test_batch", "adapted")
TEST_BATCH = 64  # the training batch size: BN's test-batch statistics come from batches this large
RESULTS_FILE = "shift.json"  # in the results folder
PAGE = "docs/test_time.md"
CPU = torch.device("cpu")


def conditions():
    """('clean', 0) and every (shift, severity) of input_shifts."""
    return [("clean", 0)] + [(name, severity) for name in SHIFTS for severity in LEVELS[name]]


def saved_models(results_dir, sources=None):
    """(variant key, seed, config, weights) of every run in the results files `sources` (names in results_dir;
    unset: the studies' files): the weights travel with the tasks, so a worker on another machine needs no copy of
    results/. A diverged run has no weights and is left out."""
    models = []
    for path, command in source_files(results_dir, sources):
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing; {command} writes it")
        for run in (run for run in json.loads(path.read_text())["runs"] if "diverged" not in run):
            model = load_model(model_path(Path(results_dir) / "models", run), run["config"])
            models.append((run_key(run), run["config"]["seed"], run["config"], model.state_dict()))
    return models


def source_files(results_dir, sources=None):
    """[(results file, the command that writes it)]: `sources` in results_dir, or the studies' files."""
    if sources:
        return [(Path(results_dir) / name, "its experiment (results/guide/: python -m lab.guide)") for name in sources]
    return [(results_file(results_dir, variants),
             f"python main.py --norm all --variants {' '.join(variants)} --seeds 0 1 2") for variants in STUDIES]


@lru_cache(maxsize=1)
def test_images(data_dir):
    ensure_mnist_on_this_node(data_dir)  # on a cluster: checked (or downloaded once) on every node
    return load_mnist_split(data_dir, train=False)


def evaluate_condition(name, severity, models, data_dir):
    """Rows of every model under one shift and severity (BN models in each of BN_MODES)."""
    torch.set_num_threads(1)  # as the study's runs were evaluated: the clean rows equal their final accuracies
    images, labels = test_images(data_dir)
    x = normalize(shifted(images, name, severity))
    rows = []
    for key, seed, config, state in models:
        model = net_with_weights(state, config)
        results = ({"running": evaluate(model, DeviceLoader(x, labels, eval_batch_size(CPU))),
                    "test_batch": evaluate_with_batch_statistics(model, x, labels, TEST_BATCH),
                    "adapted": evaluate_adapted(model, x, labels)} if has_batch_norm(model)
                   else {None: evaluate(model, DeviceLoader(x, labels, eval_batch_size(CPU)))})
        rows += [{"variant": key, "seed": seed, "shift": name, "severity": severity, "bn_stats": mode,
                  "test_acc": result["acc"], "test_loss": result["loss"]} for mode, result in results.items()]
    return rows


def summarize(rows):
    """Per variant, shift, severity and BN mode: the test accuracy over seeds (mean, std, min, max)."""
    groups = group_by(rows, lambda row: (row["variant"], row["shift"], row["severity"], row["bn_stats"]))
    return [{"variant": v, "shift": s, "severity": sev, "bn_stats": mode, "seeds": len(group),
             "test_acc": over_seeds(row["test_acc"] for row in group)}
            for (v, s, sev, mode), group in groups.items()]


def columns(summary):
    """(variant, BN mode) pairs in table order: every variant as deployed, then BN's other modes."""
    variants = [k for k in VARIANTS if any(e["variant"] == k for e in summary)]
    deployed = [(v, next(e["bn_stats"] for e in summary if e["variant"] == v)) for v in variants]
    return deployed + [(v, mode) for v, first in deployed if first for mode in BN_MODES[1:]]


def column_label(variant, mode):
    """'GN', 'BN' (as deployed: its running statistics), 'BN+L1, re-estimated stats': a variant in one BN mode."""
    return VARIANTS[variant].label + {None: "", "running": "", "test_batch": ", test-batch stats",
                                      "adapted": ", re-estimated stats"}[mode]


def shift_table(summary):
    """Markdown: one row per shift and severity, test accuracy (mean ± std over seeds) per variant and BN mode."""
    cols = columns(summary)
    cells = {(e["variant"], e["bn_stats"], e["shift"], e["severity"]): e["test_acc"] for e in summary}
    lines = ["| shift | severity | " + " | ".join(column_label(v, m) for v, m in cols) + " |",
             "|---|---:|" + "---:|" * len(cols)]
    for name, severity in conditions():
        lines.append(f"| {name.replace('_', ' ')} | {severity} | " + " | ".join(
            f"{cells[(v, m, name, severity)]['mean']:.2f} ± {cells[(v, m, name, severity)]['std']:.2f}"
            if (v, m, name, severity) in cells else "-" for v, m in cols) + " |")
    return "\n".join(lines)


def shift_section(results):
    """The shift table, and how many models and seeds stand behind each cell."""
    shift = read(results, RESULTS_FILE)
    rows = shift["results"]
    models = {(r["variant"], r["seed"]) for r in rows}
    return "\n".join([
        shift_table(shift["summary"]), "",
        f"From `results/shift.json`: {len(models)} models (the study's and BN's, {len(models) // 4} seeds each) "
        f"on the 10,000 test images under every shift; test accuracy %, mean ± std over seeds; {shift['cpu']}, "
        f"torch {shift['torch']}, {shift['threads']} torch thread."])


PER_IMAGE, BN_DEPLOYED = (("gn", None), ("ln", None)), (("bn_l1", "running"), ("bn", "running"))
INTENSITY = ("brightness", "gaussian_noise", "blur")
# docs/test_time.md's findings, each with the comparisons (A, B, shift, severity) it reports: one Bonferroni family each
FINDINGS = {
    "Contrast 3, as deployed": [(a, b, "contrast", 3) for a in PER_IMAGE for b in BN_DEPLOYED],
    "Brightness, Gaussian noise and blur at severity 3, as deployed":
        [(a, b, name, 3) for name in INTENSITY for a in PER_IMAGE for b in BN_DEPLOYED],
    "BN+L1 with statistics re-estimated on the shifted images, severity 3":
        [(("bn_l1", "adapted"), b, name, 3) for name in ("contrast", *INTENSITY) for b in (BN_DEPLOYED[0], *PER_IMAGE)],
    "Rotation 3, as deployed": [(a, b, "rotation", 3) for a, b in combinations((*PER_IMAGE, *BN_DEPLOYED), 2)],
    "Translation and scale at severity 3": [
        (("bn", "running"), ("gn", None), "translation", 3), (("bn", "adapted"), ("bn", "running"), "translation", 3),
        *[(("gn", None), b, "scale", 3) for b in (("ln", None), *BN_DEPLOYED)],
        (("bn", "adapted"), ("bn", "running"), "scale", 3)],
}
MODE_NAMES = {"running": "running statistics (as deployed)", "test_batch": "test-batch statistics",
              "adapted": "statistics re-estimated on the shifted images"}


def per_seed(rows):
    """{(variant, BN mode, shift, severity): {seed: test accuracy}, in seed order}."""
    groups = group_by(sorted(rows, key=lambda row: row["seed"]),
                      lambda row: (row["variant"], row["bn_stats"], row["shift"], row["severity"]))
    return {key: {row["seed"]: row["test_acc"] for row in group} for key, group in groups.items()}


def condition_label(name, severity):
    return f"{name.replace('_', ' ')} {severity}"


def finding_table(comparisons, accs):
    """welch_table of one finding's comparisons (A, B, shift, severity), Bonferroni over them."""
    return welch_table([(f"{condition_label(name, severity)}: {column_label(*a)}", accs[(*a, name, severity)],
                         column_label(*b), accs[(*b, name, severity)], a[0] == b[0])  # one variant: its models
                        for a, b, name, severity in comparisons])


def l1_table(accs, conditions_run):
    """Markdown: BN+L1 − BN under every condition in each BN mode by Welch, Bonferroni over all of them; per mode how
    many are separated, the one furthest from 0 (largest |A − B| against its interval's width), and the smallest
    differences the seeds would detect."""
    family = len(conditions_run) * len(BN_MODES)
    lines = [f"| BN mode | conditions | separated ({100 * (1 - ALPHA / family):.4g}% interval, Welch) "
             f"| closest to separated: A − B (interval) "
             f"| detectable difference: median (smallest-largest) |",
             "|---|---:|---:|---|---|"]
    for mode in BN_MODES:
        results = {condition: welch(list(accs[("bn_l1", mode, *condition)].values()),
                                    list(accs[("bn", mode, *condition)].values()), alpha=ALPHA / family)
                   for condition in conditions_run}
        closest, r = max(results.items(),
                         key=lambda item: abs(item[1]["difference"]) / (item[1]["high"] - item[1]["low"]))
        detectable = sorted(result["detectable"] for result in results.values())
        lines.append(f"| {MODE_NAMES[mode]} | {len(results)} | {sum(x['separated'] for x in results.values())} "
                     f"| {condition_label(*closest)}: {r['difference']:+.2f} ({r['low']:+.2f} to {r['high']:+.2f}) "
                     f"| {statistics.median(detectable):.2f} ({detectable[0]:.2f}-{detectable[-1]:.2f}) |")
    return "\n".join(lines)


def shift_comparisons_section(results):
    """The comparisons docs/test_time.md's findings make, one Welch table per finding, and BN+L1 against BN."""
    rows = read(results, RESULTS_FILE)["results"]
    accs, conditions_run = per_seed(rows), list(dict.fromkeys((row["shift"], row["severity"]) for row in rows))
    parts = []
    for title, comparisons in FINDINGS.items():
        parts += [f"*{title}* ({len(comparisons)} comparison{'s' * (len(comparisons) > 1)}):", "",
                  finding_table(comparisons, accs), ""]
    family = len(conditions_run) * len(BN_MODES)
    return "\n".join(parts + [
        f"*BN+L1 − BN under every condition* ({len(conditions_run)} conditions, clean included, x {len(BN_MODES)} BN "
        f"modes: {family} comparisons):", "", l1_table(accs, conditions_run), "",
        f"From `results/shift.json` ({len({row['seed'] for row in rows})} seeds per variant; test accuracy %, "
        f"differences in points). Welch's interval of the difference of means: each variant's models are separate "
        f"runs, not paired on one machine (docs/protocol.md, rule 7); where both sides are one variant's models in two "
        f"BN modes, the interval is paired: each seed's model against itself. Each table is one finding's family, Bonferroni-adjusted over its "
        f"comparisons; a variant named without a mode is as deployed (BN: its running statistics)."])


SECTIONS = {"SHIFT": shift_section, "SHIFT_COMPARISONS": shift_comparisons_section}  # block name -> its writer


def run(results_dir, images_dir, data_dir, workers=1, address=None, log=print, sources=None):
    """Evaluate every saved model of `sources` (unset: the study's) under every condition; write shift.json in
    results_dir, and for the study's models both figures."""
    began = time.perf_counter()
    models = saved_models(results_dir, sources)
    data_dir = str(Path(data_dir).absolute())  # the same path on every node
    if not address:
        ensure_mnist(data_dir)  # here, once, before the workers need it
    tasks = [(name, severity, models, data_dir) for name, severity in conditions()]
    rows, failures = [], []
    for (name, severity, *_), result, error in map_tasks(evaluate_condition, tasks, workers, address):
        if error:
            failures.append(f"{name}/{severity}: {error}")
        else:
            rows += result
            log(f"done: {name}, severity {severity}")
    if failures:
        raise RuntimeError(f"{len(failures)} of {len(tasks)} evaluations failed, e.g. " + "; ".join(failures[:2]))
    rows.sort(key=lambda r: (conditions().index((r["shift"], r["severity"])), list(VARIANTS).index(r["variant"]),
                             r["seed"], BN_MODES.index(r["bn_stats"]) if r["bn_stats"] else 0))
    path = Path(results_dir) / RESULTS_FILE
    save_json({"summary": summarize(rows), "results": rows, "device": "cpu", "cpu": cpu_name(), "threads": 1,
               "torch": torch.__version__, "workers": workers, "seconds": time.perf_counter() - began}, path)
    return [path, *([] if sources else redraw_shift(path, images_dir, data_dir))]


# ---- the shift study ----------------------------------------------------------------------------
MODE_STYLES = {None: "-", "running": "-", "test_batch": "--", "adapted": ":"}


SHIFT_SERIES = (("gn", None), ("ln", None), ("bn_l1", "running"), ("bn_l1", "adapted"))  # the rest: the table


def plot_shift(summary):
    """One panel per shift: test error against severity for GN, LN and BN+L1 (as deployed, and with its
    statistics re-estimated on the shifted images); mean over seeds, min-max band.

    Severity 0 is the clean test set. BN without L1 and the test-batch statistics are in the table only,
    so that each panel stays readable at the width GitHub shows it.
    """
    clean = [e for e in summary if e["shift"] == "clean"]
    fig, axes = plt.subplots(3, 3, figsize=(10, 10), dpi=DPI, sharey=True)
    for ax, name in zip(axes.flat, SHIFTS):
        entries = [e for e in summary if e["shift"] == name]
        for key, mode in SHIFT_SERIES:
            line = sorted([e for e in clean + entries if (e["variant"], e["bn_stats"]) == (key, mode)],
                          key=lambda e: e["severity"])
            if not line:
                continue
            levels, acc = [e["severity"] for e in line], [e["test_acc"] for e in line]
            label = VARIANTS[key].label + (" as deployed" if mode == "running" else
                                           ", statistics re-estimated on the shifted images" if mode else "")
            ax.plot(levels, [100 - a["mean"] for a in acc], MODE_STYLES[mode], marker="o", ms=4,
                    color=VARIANTS[key].color, label=label)
            ax.fill_between(levels, [100 - a["max"] for a in acc], [100 - a["min"] for a in acc],
                            color=VARIANTS[key].color, alpha=0.12)
        ax.set_title(name.replace("_", " "), fontsize=12)
        ax.set(xticks=range(4))
        ax.tick_params(labelsize=10)
        plain_log_axis(ax)
        ax.grid(alpha=0.3, which="both")
    for ax in axes[:, 0]:
        ax.set_ylabel("test error (%, log)", fontsize=11)
    for ax in axes[-1]:
        ax.set_xlabel("severity (0: clean)", fontsize=11)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=11, frameon=False)
    seeds = max(e["seeds"] for e in summary)
    fig.suptitle(f"Test error on shifted test images, mean of {seeds} seeds (band: min-max)", fontsize=13)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


def plot_shift_examples(images, index=0):
    """One test digit under every shift (rows) at every severity (columns)."""
    x = images[index:index + 1]
    fig, axes = plt.subplots(len(SHIFTS), 4, figsize=(6, 1.6 * len(SHIFTS)), dpi=DPI)
    for row, name in zip(axes, SHIFTS):
        for severity, ax in enumerate(row):
            ax.axis("off")
            if severity and severity not in LEVELS[name]:
                continue
            ax.imshow(shifted(x, name, severity)[0, 0].numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"{name.replace('_', ' ')} {severity}" if severity else "clean", fontsize=8)
    fig.suptitle("One test digit under every shift and severity", fontsize=10)
    fig.tight_layout()
    return fig


def redraw(results_dir, images_dir, data_dir):
    """The shift study's figures from results_dir/shift.json; returns their paths ([] without the file)."""
    path = Path(results_dir) / RESULTS_FILE
    return redraw_shift(path, images_dir, data_dir) if path.exists() else []


def redraw_shift(results_path, images_dir, data_dir):
    """images_dir/shift.png and shift_examples.png from the shift study's results; returns their paths."""
    figures = {"shift": plot_shift(json.loads(Path(results_path).read_text())["summary"]),
               "shift_examples": plot_shift_examples(load_mnist_split(data_dir, train=False)[0])}
    paths = save_figures(figures, images_dir)
    for fig in figures.values():
        plt.close(fig)
    return paths


def main(argv=None):
    args = parse_args(argv)
    try:
        paths = run(args.results, args.images, args.data_dir or default_data_dir(), args.workers, args.address,
                    sources=args.sources)
    except (OSError, DataError, WriteError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for path in paths:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    from lab import shift  # Ray ships functions of __main__ by value, without their module: send them by name instead
    sys.exit(shift.main())
