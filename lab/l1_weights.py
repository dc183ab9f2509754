"""What an L1 penalty does behind a norm, measured on the committed BN and BN+L1 weights (no training).

    python -m lab.l1_weights            # writes results/l1_weights.json and prints the table

Each of the seven convs is followed by BatchNorm and has no bias, so scaling its weights by any
c > 0 leaves the network's output unchanged (tests/test_model.py checks it): the penalty cannot make
these weights "smaller" in any sense the network sees. What it can change is their norm (which
BN divides out) and how many of them are near zero within their layer (a scale-free sparsity:
the share of |w| below SPARSE_FRACTION of the layer's largest |w|). Only the head, a 1x1 conv that
no norm follows, is regularized in the usual sense: its norm is reported apart.
"""
import argparse
import json
import sys
from pathlib import Path

import torch

from plumbing.config import STUDY_L1
from plumbing.results import over_seeds
from plumbing.stats import ALPHA, welch
from plumbing.system import save_json
from lab.sections import needs, welch_table

SPARSE_FRACTION = 0.01  # a weight counts as near zero below 1% of its layer's largest |w|
SEEDS = (0, 1, 2)
RESULTS = "results/l1_weights.json"
PAGE = "docs/study.md"
VARIANT_FILES = {"BN": "bn_seed{seed}.pt", "BN+L1": "bn_l1_seed{seed}.pt"}


def conv_weights(state):
    """{layer name: weight} of every conv in a saved Net state_dict, the head last."""
    return {name.removesuffix(".weight"): w for name, w in state.items() if name.endswith(".weight") and w.dim() == 4}


def layer_measures(weight):
    """L2 norm, L1 norm, and the share of weights below SPARSE_FRACTION of the largest |w| (percent)."""
    w = weight.abs().flatten()
    return {"l2": float(w.norm()), "l1": float(w.sum()), "numel": w.numel(),
            "near_zero_percent": 100.0 * float((w < SPARSE_FRACTION * w.max()).float().mean())}


def measure(models_dir, seeds=SEEDS):
    """Per variant and layer: each measure over the seeds (mean, std, min, max), with each seed's value."""
    out = {}
    for variant, pattern in VARIANT_FILES.items():
        per_seed = []
        for seed in seeds:
            path = Path(models_dir) / pattern.format(seed=seed)
            if not path.exists():
                raise FileNotFoundError(f"{path} is missing: train it with `python main.py --norm all` "
                                        f"(BN+L1) or the shift study's BN control (study_bn.json)")
            state = torch.load(path, map_location="cpu", weights_only=True)
            per_seed.append({name: layer_measures(w) for name, w in conv_weights(state).items()})
        layers = list(per_seed[0])
        out[variant] = {layer: {key: over_seeds([s[layer][key] for s in per_seed], per_seed=True)
                                for key in ("l2", "l1", "near_zero_percent")} | {"numel": per_seed[0][layer]["numel"]}
                        for layer in layers}
    return {"seeds": list(seeds), "l1_lambda": STUDY_L1, "sparse_fraction": SPARSE_FRACTION, "layers": out}


def layer_label(name, index):
    return "head (no norm)" if name == "head" else f"conv {index + 1}"


def l1_weights_table(result):
    """Markdown: per layer, BN and BN+L1 weight norm and near-zero share, mean ± std over seeds."""
    bn, l1 = result["layers"]["BN"], result["layers"]["BN+L1"]
    percent = f"{100 * result['sparse_fraction']:g}%"
    lines = [f"| layer | weights | L2 norm, BN | L2 norm, BN+L1 | ratio | near zero (under {percent} of max), BN "
             f"| near zero, BN+L1 |", "|---|---:|---:|---:|---:|---:|---:|"]
    for index, name in enumerate(bn):
        a, b = bn[name], l1[name]
        lines.append(f"| {layer_label(name, index)} | {a['numel']:,} | {a['l2']['mean']:.2f} ± {a['l2']['std']:.2f} "
                     f"| {b['l2']['mean']:.2f} ± {b['l2']['std']:.2f} | {b['l2']['mean'] / a['l2']['mean']:.2f} "
                     f"| {a['near_zero_percent']['mean']:.1f} ± {a['near_zero_percent']['std']:.1f}% "
                     f"| {b['near_zero_percent']['mean']:.1f} ± {b['near_zero_percent']['std']:.1f}% |")
    return "\n".join(lines)


# the measures compared between BN and BN+L1, each with its table's title and the unit of its differences
COMPARED = {"l2": ("L2 norm", "norm"),
            "near_zero_percent": (f"share of |w| below {100 * SPARSE_FRACTION:g}% of the layer's largest", "points")}


@needs("l1_weights.json", "python -m lab.l1_weights")
def l1_weights_section(results, l1):
    """The weights table, then BN − BN+L1 per layer and measure by Welch's interval (each variant's models are
    separate runs: docs/protocol.md, rule 7), Bonferroni over every layer and measure compared, and in how many
    layers it excludes 0."""
    bn, with_l1 = l1["layers"]["BN"], l1["layers"]["BN+L1"]
    labels = {name: layer_label(name, index) for index, name in enumerate(bn)}
    family = len(bn) * len(COMPARED)
    tables, results_of = [], {}
    for key, (title, unit) in COMPARED.items():
        pairs = [(f"{labels[name]}: BN", bn[name][key]["values"], "BN+L1", with_l1[name][key]["values"]) for name in bn]
        results_of[key] = {name: welch(a, b, alpha=ALPHA / family) for name, (_, a, _, b) in zip(bn, pairs)}
        tables += [f"*{title}, BN − BN+L1:*", "", welch_table(pairs, family, unit), ""]
    convs = [name for name in bn if name != "head"]
    head = results_of["l2"]["head"]
    head_verdict = ("separated" if head["separated"]
                    else f"not told apart (these seeds would detect {head['detectable']:.2f})")
    return "\n".join([
        l1_weights_table(l1), "", *tables,
        f"From `results/l1_weights.json` (seeds {', '.join(map(str, l1['seeds']))}, lambda {l1['l1_lambda']:g}). "
        f"Welch's interval of BN − BN+L1 (each variant's models are separate runs, not paired on one machine), "
        f"Bonferroni over the {family} comparisons above ({len(bn)} layers x {len(COMPARED)} measures): "
        f"the L2 norm is separated between BN and BN+L1 in {sum(results_of['l2'][n]['separated'] for n in convs)} "
        f"of {len(convs)} normalized convs, the near-zero share in "
        f"{sum(results_of['near_zero_percent'][n]['separated'] for n in convs)} of {len(convs)}; the head's L2 norm is "
        f"{head_verdict}."])


def l1_sweep_section(results):
    """The lambdas tried for BN+L1, chosen on the validation split (the test accuracy only reported)."""
    runs = sorted((json.loads(p.read_text()) for p in (Path(results) / "l1_sweep").glob("*.json")),
                  key=lambda m: m["config"]["l1"])
    lines = ["| L1 lambda | validation acc, last epoch | validation loss | test acc (reported only) |",
             "|---:|---:|---:|---:|"]
    for m in runs:
        last = m["epochs"][-1]
        lines.append(f"| {m['config']['l1']:g} | {last['val_acc']:.2f}% | {last['val_loss']:.4f} "
                     f"| {last['test_acc']:.2f}% |")
    return "\n".join(lines)


# block name -> the function that writes it
SECTIONS = {"L1_WEIGHTS": l1_weights_section, "L1_SWEEP": l1_sweep_section}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="results/models", help="folder of the saved weights")
    p.add_argument("--results", default=RESULTS, help="the JSON file to write")
    args = p.parse_args(argv)
    try:
        result = measure(args.models)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    save_json(result, args.results)
    print(l1_weights_table(result))
    print(f"wrote {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
