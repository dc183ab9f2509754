"""The guide's evidence under its protocol (docs/protocol.md): per point, each comparison the guide reports as the
paired interval of its per-seed differences, Bonferroni-adjusted over the point's family of comparisons.

Written into docs/protocol.md by `python report.py --write`; the runs come from `python -m lab.guide`.
"""
from itertools import combinations
from pathlib import Path

from lab.guide import ALL_POINTS, CHOSEN, GUIDE_DIR, POINTS, SELECTION_SEEDS, point_configs, variant_name
from lab.sections import machines, seeds_line
from plumbing.config import COMPARED, DEFAULTS, RESULTS_DIR, config_from_record, run_label
from plumbing.results import group_by, load_results

PAGE = "docs/protocol.md"
VERDICT_SEEDS = 6  # a comparison decides only with this many paired seeds (docs/protocol.md, rule 1)
GUIDE = Path(GUIDE_DIR).relative_to(RESULTS_DIR)  # guide/, inside whatever results folder the report reads


def label(config):
    """'BN', 'GN at Adam 0.3', 'BN over slices of 2', 'LN at SGD 0.1': a variant as a table names it."""
    text = run_label(config)
    if config.bn_batch:
        text += f" over slices of {config.bn_batch}"
    if config.lr != DEFAULTS.lr or config.optimizer != DEFAULTS.optimizer:
        text += f" at {config.optimizer.upper() if config.optimizer == 'sgd' else 'Adam'} {config.lr:g}"
    return text


def families(point, configs):
    """[(title, [(a, b), ...])]: the comparisons a point reports, each family adjusted on its own. The batch
    points compare every norm with the one the guide recommends there (BN at 64 and 512, GN at 2 and 8), BN over
    slices with plain BN; the LR points and the recipe compare every pair, or each variant with GN(4)."""
    plain = {c.norm: c for c in configs if not c.bn_batch and c.gn_groups == 4}  # BN, GN(4), ... as such
    if point == "adam_lr":
        return [(f"Adam {lr}", list(combinations([c for c in configs if c.lr == lr], 2)))
                for lr in dict.fromkeys(c.lr for c in configs)]
    if point.startswith("batch_") and point != "batch_512_equal_steps":
        norms = [c for c in configs if not c.bn_batch]
        reference = plain["bn"] if point in ("batch_64", "batch_512") else plain["gn"]
        found = [(f"the norms, against {label(reference)}", [(c, reference) for c in norms if c is not reference])]
        sliced = [c for c in configs if c.bn_batch]
        return found + ([("BN over slices, against plain BN", [(c, plain["bn"]) for c in sliced])] if sliced else [])
    if point == "recipe":
        return [("against GN(4)", [(c, plain["gn"]) for c in configs if c is not plain["gn"]])]
    return [("every pair", list(combinations(configs, 2)))]  # equal steps, the chosen LRs


def paired_seeds(runs_a, runs_b):
    """{seed: (acc a, acc b)} where both runs finished on one machine (equal fingerprints), and the seeds left
    out with why."""
    b_by_seed = {r["config"]["seed"]: r for r in runs_b}
    pairs, left_out = {}, []
    for a in runs_a:
        seed, b = a["config"]["seed"], b_by_seed.get(a["config"]["seed"])
        if b is None:
            continue
        if "diverged" in a or "diverged" in b:
            left_out.append(f"seed {seed} diverged")
        elif not a.get("fingerprint") or a["fingerprint"] != b["fingerprint"]:
            left_out.append(f"seed {seed} on two machines")
        else:
            pairs[seed] = (a["epochs"][-1]["test_acc"], b["epochs"][-1]["test_acc"])
    return pairs, left_out


def comparison_row(a, b, runs, family):
    """One table row: a - b over the seeds paired on one machine, the adjusted interval, the verdict."""
    from plumbing.stats import paired
    pairs, left_out = paired_seeds(runs.get(variant_name(a), []), runs.get(variant_name(b), []))
    accs_a, accs_b = [p[0] for p in pairs.values()], [p[1] for p in pairs.values()]
    head = f"| {label(a)} − {label(b)} | {len(pairs)}"
    note = f" ({'; '.join(left_out)})" if left_out else ""
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    if len(pairs) < 2:
        shown = f"{accs_a[0]:.2f} | {accs_b[0]:.2f} | {accs_a[0] - accs_b[0]:+.2f} | " if pairs else "| | | "
        return f"{head} | {shown}| no interval from {len(pairs)} seed{note} |"
    result = paired(accs_a, accs_b, family=family)
    if len(pairs) < VERDICT_SEEDS:
        verdict = f"none yet: {len(pairs)} of {VERDICT_SEEDS} seeds"
    elif result["separated"]:
        verdict = "**separated**"
    else:
        verdict = f"not told apart (would detect {result['detectable']:.2f})"
    return (f"{head} | {mean(accs_a):.2f} | {mean(accs_b):.2f} | {result['difference']:+.2f} | "
            f"{result['low']:+.2f} to {result['high']:+.2f} | {verdict}{note} |")


def point_section(point, runs):
    """A point's tables: one per family, with its level."""
    grouped = group_by(runs, lambda run: variant_name(config_from_record(run["config"])))
    configs = [config_from_record(group[0]["config"]) for group in grouped.values()] if point in CHOSEN else \
        point_configs(point)
    lines = []
    for title, pairs in families(point, configs):
        if not pairs:
            continue
        level = 100 * (1 - 0.05 / len(pairs))
        lines += ["", f"*{title}* ({len(pairs)} comparison{'s' * (len(pairs) > 1)}, {level:.4g}% intervals):", "",
                  "| test accuracy, A − B | paired seeds | A | B | A − B (points) | interval | verdict |",
                  "|---|---:|---:|---:|---:|---|---|"]
        lines += [comparison_row(a, b, grouped, len(pairs)) for a, b in pairs]
    return lines


def guide_points_section(results):
    """Every guide point trained so far: its seeds, its machines, and its paired comparisons."""
    lines = []
    for point in ALL_POINTS:
        runs = load_results(Path(results) / GUIDE / f"{point}.json")["runs"]
        if not runs:
            lines.append(f"- **{point}**: no runs yet.")
            continue
        lines.append(f"- **{point}**: {len(runs)} runs, {seeds_line(runs)}, on {machines(runs)}.")
    lines.append("")
    for point in ALL_POINTS:
        runs = load_results(Path(results) / GUIDE / f"{point}.json")["runs"]
        if runs and point not in SELECTION_SEEDS:
            lines += [f"#### {point}", *point_section(point, runs), ""]
    return "\n".join(lines).rstrip()


def chosen_lr_section(results):
    """Each selection's mean validation accuracy per norm and LR, and the LR it chooses."""
    lines = []
    for point, selection in CHOSEN.items():
        runs = load_results(Path(results) / GUIDE / f"{selection}.json")["runs"]
        lrs = list(dict.fromkeys(c.lr for c in POINTS[selection]))
        lines += ["", f"*{selection}*: validation accuracy (%) after 3 epochs, mean over "
                  f"{seeds_line(runs) if runs else 'no seed yet'} (the choice needs {SELECTION_SEEDS[selection]}):", "",
                  "| norm | " + " | ".join(f"LR {lr:g}" for lr in lrs) + " | chosen |", "|---|" + "---:|" * len(lrs)
                  + "---|"]
        for norm in COMPARED:
            cells = []
            for lr in lrs:
                found = [r for r in runs if r["config"]["norm"] == norm and r["config"]["lr"] == lr]
                diverged = sum("diverged" in r for r in found)
                done = [r["epochs"][-1]["val_acc"] for r in found if "diverged" not in r]
                cells.append((f"{sum(done) / len(done):.2f}" if done else "") + (f" ({diverged} diverged)"
                                                                                 if diverged else ""))
            chosen = [c.lr for c in point_configs(point, results=Path(results) / GUIDE) if c.norm == norm]
            lines.append(f"| {norm.upper()} | " + " | ".join(cells) + f" | {chosen[0] if chosen else 'not yet'} |")
    return "\n".join(lines).strip()


SECTIONS = {"GUIDE_POINTS": guide_points_section, "GUIDE_CHOSEN_LR": chosen_lr_section}
