"""Beyond BN, GN and LN (docs/beyond.md): the seven norms against the batch size, and BN's normalization batch, from
the guide's paired runs (results/guide/batch_*.json, trained by `python -m lab.guide`).

Nothing trains here: the table and the figure read the guide's results files (`python report.py --write`,
`python plots.py`); the verdicts are the guide's paired intervals (docs/protocol.md, "The evidence so far").
"""
from pathlib import Path

from lab.guide import BATCH_NORMS
from lab.guide_report import GUIDE, VERDICT_SEEDS, by_seed, paired_seeds
from plumbing.config import VARIANTS, config_from_record
from plumbing.results import load_results, over_seeds

PAGE = "docs/beyond.md"
POINTS = {2: "batch_2", 8: "batch_8", 64: "batch_64", 512: "batch_512"}  # batch size -> its guide point
FIGURE = "beyond"


def runs_by_cell(results):
    """{(norm, batch size, normalization batch): {seed: (final test accuracy, fingerprint)}} of the guide's batch
    points (a diverged run has accuracy None), normalization batch 0 for a norm over the whole batch."""
    cells = {}
    for batch_size, point in POINTS.items():
        for run in load_results(Path(results) / GUIDE / f"{point}.json")["runs"]:
            config = config_from_record(run["config"])
            cells.setdefault((config.norm, batch_size, config.bn_batch), {}).update(by_seed([run]))
    return cells


def final_accuracies(results):
    """{(norm, batch size, normalization batch): {seed: final test accuracy, None where it diverged}}."""
    return {key: {seed: accuracy for seed, (accuracy, _) in runs.items()}
            for key, runs in runs_by_cell(results).items()}


def cell(by_seed):
    """'99.21 ± 0.05 (6)' or '99.16 (1)': mean ± std of the finished seeds and how many; diverged seeds named."""
    values = [v for v in by_seed.values() if v is not None]
    spread = over_seeds(values)
    text = (f"{spread['mean']:.2f}" + (f" ± {spread['std']:.2f}" if len(values) > 1 else "") + f" ({len(values)})"
            if values else "")
    diverged = len(by_seed) - len(values)
    return text + (f", {diverged} diverged" if diverged else "")


def beyond_section(results, docs=""):
    """The seven norms (rows) at each batch size (columns), and BN over slices: mean ± std test accuracy, seeds;
    `docs` is the docs folder's path from where the text is read ("" on docs/beyond.md, "docs/" in the notebook)."""
    cells = final_accuracies(results)
    if not cells:
        return "Not run yet: `python -m lab.guide` writes `results/guide/batch_*.json`."
    rows = [(VARIANTS[norm].label, [cells.get((norm, b, 0), {}) for b in POINTS]) for norm in BATCH_NORMS]
    rows += [(f"BN over slices of {k}", [cells.get(("bn", b, k), {}) for b in POINTS])
             for k in sorted({k for (_, _, k) in cells if k})]
    lines = ["| norm | " + " | ".join(f"batch {b}" for b in POINTS) + " |", "|---|" + "---:|" * len(POINTS)]
    lines += [f"| {label} | " + " | ".join(cell(by_seed) for by_seed in by_batch) + " |" for label, by_batch in rows]
    runs = [r for point in POINTS.values() for r in load_results(Path(results) / GUIDE / f"{point}.json")["runs"]]
    from lab.sections import machines, seeds_line
    return "\n".join(lines + ["", f"Final test accuracy (%) after 3 epochs, mean ± std over the seeds in brackets, "
                                  f"from `results/guide/batch_*.json` ({len(runs)} runs, {seeds_line(runs)}, on "
                                  f"{machines(runs)}). The paired comparisons: [the batch-size page]"
                                  f"({docs}batch_size.md#the-guides-paired-runs)."])


# what each paper reports, and the pair of cells (norm, batch size, normalization batch) that asks the same here:
# (source, their setting, what they report, A, B); the claim is that A is ahead of B
CLAIMS = (
    ("GN (Wu & He 2018)", "ResNet-50, ImageNet, 2 images per GPU",
     "GN's error 10.6 points below BN's", ("gn", 2, 0), ("bn", 2, 0)),
    ("GN+WS (Qiao et al. 2019)", "ImageNet, COCO; 1-2 images per GPU",
     "GN+WS ahead of GN, matching BN at large batches", ("gnws", 2, 0), ("gn", 2, 0)),
    ("GN+WS (Qiao et al. 2019)", "the same at large batches", "the same", ("gnws", 512, 0), ("gn", 512, 0)),
    ("BRN (Ioffe 2017)", "Inception-v3, ImageNet, micro-batches of 4",
     "76.5% against BN's 74.2% (BN at 32: 78.3%)", ("brn", 2, 0), ("bn", 2, 0)),
    ("BRN (Ioffe 2017)", "the same", "the same", ("brn", 8, 0), ("bn", 8, 0)),
    ("FRN (a reproduction)", "ResNet-20, CIFAR-10, 32 images per GPU",
     "FRN 92.3% against BN's 91.2%", ("frn", 8, 0), ("bn", 8, 0)),
    ("FRN (reproductions)", "the same at 128 per GPU; ResNet-50, ImageNet",
     "BN ahead: 93.01% against 92.3%; error 23.6% against 24.0%", ("bn", 64, 0), ("frn", 64, 0)),
    ("EvoNorm-S0 (Liu et al. 2020)", "ResNet-50 and others, ImageNet, small batches",
     "EvoNorm-S0 ahead of BN-ReLU", ("evo", 2, 0), ("bn", 2, 0)),
    ("EvoNorm-S0 (a public report)", "a Mini-Inception, CIFAR-10",
     "BN-ReLU ahead of EvoNorm-S0", ("bn", 64, 0), ("evo", 64, 0)),
    ("ghost BN (Hoffer et al. 2017)", "large batches, BN over ghost batches of 128",
     "ghost batches generalize better than BN over the whole batch", ("bn", 512, 64), ("bn", 512, 0)),
)


def cell_label(cell):
    norm, batch_size, bn_batch = cell
    return f"{VARIANTS[norm].label}{f' over slices of {bn_batch}' if bn_batch else ''} at batch {batch_size}"


def claim_verdict(result, seeds):
    """The claim (A ahead of B) against the paired interval: a verdict only from VERDICT_SEEDS paired seeds."""
    if seeds < VERDICT_SEEDS:
        return f"none yet: {seeds} of {VERDICT_SEEDS} seeds"
    if not result["separated"]:
        return f"not told apart (would detect {result['detectable']:.2f})"
    return "**same direction**, separated" if result["difference"] > 0 else "**the opposite**, separated"


def papers_section(results):
    """Each paper's claim beside the same comparison here: A − B over the seeds paired on one machine, its interval
    Bonferroni-adjusted over the claims, and whether it goes the paper's way."""
    from plumbing.stats import paired
    cells = runs_by_cell(results)
    level = 100 * (1 - 0.05 / len(CLAIMS))
    lines = ["| source | their setting | they report | the comparison here (3 epochs) | paired seeds | A − B (points) "
             f"| interval (level {level:.4g}%) | verdict |", "|---|---|---|---|---:|---:|---|---|"]
    for source, setting, reported, a, b in CLAIMS:
        pairs, left_out = paired_seeds(cells.get(a, {}), cells.get(b, {}))
        differences = [x - y for x, y in pairs.values()]
        head = f"| {source} | {setting} | {reported} | {cell_label(a)} − {cell_label(b)} | {len(pairs)} |"
        note = f" ({'; '.join(left_out)})" if left_out else ""  # a diverged seed is named, never dropped silently
        if len(pairs) < 2:
            shown = f" {differences[0]:+.2f} |" if pairs else " |"
            lines.append(f"{head}{shown} | no interval from {len(pairs)} seed{'s' * (len(pairs) != 1)}{note} |")
            continue
        result = paired([x for x, _ in pairs.values()], [y for _, y in pairs.values()], family=len(CLAIMS))
        lines.append(f"{head} {result['difference']:+.2f} | {result['low']:+.2f} to {result['high']:+.2f} | "
                     f"{claim_verdict(result, len(pairs))}{note} |")
    return "\n".join(lines)


SECTIONS = {"BEYOND": beyond_section, "BEYOND_PAPERS": papers_section}


def plot_beyond(cells):
    """Test error against batch size for each norm (left); BN's error against its normalization batch (right)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter
    from lab.figures import DPI, plain_log_axis
    fig, (norms_ax, slices_ax) = plt.subplots(1, 2, figsize=(14, 5.5), dpi=DPI, width_ratios=(3, 2))
    for norm in BATCH_NORMS:
        points = [(b, cells[(norm, b, 0)]) for b in POINTS if cells.get((norm, b, 0))]
        plot_seeds(norms_ax, points, VARIANTS[norm].color, VARIANTS[norm].label)
    for batch_size, marker in ((64, "o"), (512, "s")):
        slices = sorted({k for (n, b, k) in cells if n == "bn" and b == batch_size and k}) + [batch_size]
        points = [(k, cells[("bn", batch_size, k if k != batch_size else 0)]) for k in slices
                  if cells.get(("bn", batch_size, k if k != batch_size else 0))]
        plot_seeds(slices_ax, points, VARIANTS["bn"].color, f"BN, batch {batch_size}", marker=marker)
    seeds = max((len(by_seed) for by_seed in cells.values()), default=0)
    norms_ax.set(title=f"Test error after 3 epochs (line: mean over up to {seeds} seed{'s' * (seeds > 1)}; "
                       "dots: each seed)",
                 xlabel="training batch size (log2 scale)", ylabel="test error (%, log scale)")
    slices_ax.set(title="BN normalized over slices of the batch\n(the optimizer steps on the whole batch)",
                  xlabel="images per normalization slice (log2 scale)", ylabel="test error (%, log scale)")
    for ax in (norms_ax, slices_ax):
        ax.set_xscale("log", base=2)
        plain_log_axis(ax)
        ax.grid(alpha=0.3, which="both")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    slices_ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # a narrow range: label every tick
    norms_ax.set_xticks(list(POINTS), [str(b) for b in POINTS])
    slices_ax.set_xticks([2, 4, 8, 16, 64, 512], ["2", "4", "8", "16", "64", "512"])
    fig.tight_layout()
    return fig


def plot_seeds(ax, points, color, label, marker="o"):
    """The mean test error over the finished seeds of each (x, {seed: accuracy}) as a line, each seed as a dot."""
    xs, means = [], []
    for x, accuracies in points:
        values = [100 - v for v in accuracies.values() if v is not None]
        if values:
            xs.append(x)
            means.append(sum(values) / len(values))
            ax.plot([x] * len(values), values, marker, ms=3, color=color, alpha=0.35, ls="none")
    if xs:
        ax.plot(xs, means, "-", marker=marker, ms=5, color=color, label=label)


def redraw(results_dir, images_dir, data_dir=None):
    """images_dir/beyond.png from the guide's batch points; [] before any of them has a run."""
    cells = final_accuracies(results_dir)
    if not cells:
        return []
    from lab.figures import save_figures
    return save_figures({FIGURE: plot_beyond(cells)}, images_dir)
