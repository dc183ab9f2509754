"""The guide's evidence under its protocol (docs/protocol.md): per point, each comparison the guide reports as the
paired interval of its per-seed differences, Bonferroni-adjusted over the point's family of comparisons.

Written into docs/protocol.md by `python report.py --write`; the runs come from `python -m lab.guide`.
"""
import json
import statistics
from itertools import combinations
from pathlib import Path

from lab.guide import (ALL_POINTS, CHOSEN, GUIDE_DIR, POINTS, SELECTION_SEEDS, fingerprint_key, point_configs,
                       variant_name)
from lab.sections import machines, needs, seeds_line
from plumbing.config import (COMPARED, DEFAULTS, RESULTS_DIR, VARIANTS, config_from_record, run_identity, run_label,
                             run_name)
from plumbing.results import group_by, load_results, run_key

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


def by_seed(runs):
    """{seed: (final test accuracy, or None where the run diverged; its machine's fingerprint)} of one variant."""
    return {r["config"]["seed"]: (None if "diverged" in r else r["epochs"][-1]["test_acc"], r.get("fingerprint"))
            for r in runs}


def paired_seeds(a, b):
    """{seed: (acc a, acc b)} of the seeds whose runs (by_seed) both finished on one machine (equal fingerprints),
    and the seeds left out with why."""
    pairs, left_out = {}, []
    for seed, (acc_a, machine_a) in a.items():
        if seed not in b:
            continue
        acc_b, machine_b = b[seed]
        if acc_a is None or acc_b is None:
            left_out.append(f"seed {seed} diverged")
        elif not machine_a or machine_a != machine_b:
            left_out.append(f"seed {seed} on two machines")
        else:
            pairs[seed] = (acc_a, acc_b)
    return pairs, left_out


def comparison_row(a, b, runs, family):
    """One table row of configs a and b (their runs in `runs` by variant name)."""
    return interval_row(label(a), by_seed(runs.get(variant_name(a), [])), label(b),
                        by_seed(runs.get(variant_name(b), [])), family)


def interval_row(name_a, a, name_b, b, family):
    """One table row: a - b over the seeds paired on one machine, the adjusted interval, the verdict."""
    from plumbing.stats import paired
    pairs, left_out = paired_seeds(a, b)
    accs_a, accs_b = [p[0] for p in pairs.values()], [p[1] for p in pairs.values()]
    head = f"| {name_a} − {name_b} | {len(pairs)}"
    note = f" ({'; '.join(left_out)})" if left_out else ""
    mean = statistics.mean  # exact, as over_seeds and the pages' mean ± std
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


# where each point's paired tables stand: the page of the experiment it belongs to (a selection's are above)
POINT_PAGES = {"adam_lr": "learning_rate.md", "sgd_chosen": "learning_rate.md", "adam_chosen": "learning_rate.md",
               "recipe": "gn_family.md", **{point: "batch_size.md" for point in ALL_POINTS if point.startswith("batch_")}}
PAGE_TITLES = {"learning_rate.md": "learning rate", "batch_size.md": "batch size", "gn_family.md": "GN family"}


def guide_points_section(results):
    """Every guide point: its runs, seeds and machines so far, and the page that holds its paired tables."""
    lines = []
    for point in ALL_POINTS:
        runs = load_results(Path(results) / GUIDE / f"{point}.json")["runs"]
        where = (f"; the tables: [{PAGE_TITLES[POINT_PAGES[point]]}]"
                 f"({POINT_PAGES[point]}#{point})" if point in POINT_PAGES else
                 "; the choice: [above](#the-learning-rates-chosen-on-validation)")
        lines.append(f"- **{point}**: " + (f"{len(runs)} runs, {seeds_line(runs)}, on {machines(runs)}{where}."
                                           if runs else "no runs yet."))
    return "\n".join(lines)


def one_point_section(point):
    """A section writing one guide point's paired tables, for the page of the experiment the point belongs to."""
    def section(results):
        runs = load_results(Path(results) / GUIDE / f"{point}.json")["runs"]
        if not runs:
            return f"Not run yet: `python -m lab.guide --points {point}` writes `results/guide/{point}.json`."
        return "\n".join([f"#### {point}", "", f"`results/guide/{point}.json`, {seeds_line(runs)}, on "
                          f"{machines(runs)}: final test accuracy, A − B over the seeds whose two runs share one "
                          f"machine, the t interval Bonferroni-adjusted over the family, a verdict from "
                          f"{VERDICT_SEEDS} paired seeds ([the protocol](protocol.md)).", *point_section(point, runs)])
    return section


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


@needs(f"{GUIDE}/shift.json", f"python -m lab.shift --results {GUIDE_DIR} --from recipe.json")
def guide_shift_section(results, evaluated):
    """The recipe's models under the strongest severity of each shift (and clean), as deployed: each variant against
    GN(4) of the same seed, paired where both trained on one machine, Bonferroni over the comparisons of a
    condition."""
    recipe = load_results(Path(results) / GUIDE / "recipe.json")["runs"]
    machine = {(run_key(r), r["config"]["seed"]): r.get("fingerprint") for r in recipe}
    strongest = {}
    for row in evaluated["results"]:
        strongest[row["shift"]] = max(strongest.get(row["shift"], 0), row["severity"])
    accs = {}
    for row in evaluated["results"]:
        if row["severity"] == strongest[row["shift"]] and row["bn_stats"] in (None, "running"):
            key = (row["variant"], row["shift"], row["severity"])
            accs.setdefault(key, {})[row["seed"]] = (row["test_acc"], machine.get((row["variant"], row["seed"])))
    others = [key for key in dict.fromkeys(run_key(r) for r in recipe) if key != "gn"]
    lines = ["| test accuracy, A − B | paired seeds | A | B | A − B (points) | interval | verdict |",
             "|---|---:|---:|---:|---:|---|---|"]
    for shift, severity in strongest.items():
        lines += [interval_row(f"{shift.replace('_', ' ')} {severity}: {VARIANTS[key].label}",
                               accs.get((key, shift, severity), {}), "GN", accs.get(("gn", shift, severity), {}),
                               len(others)) for key in others]
    return "\n".join(lines + ["", f"From `results/{GUIDE}/shift.json` and `results/{GUIDE}/recipe.json` (the "
                                   f"models' machines): each shift at its strongest severity, BN with its running "
                                   f"statistics (as deployed); {len(others)} comparisons per condition, one "
                                   f"Bonferroni family ({100 * (1 - 0.05 / max(len(others), 1)):.4g}% intervals)."])


def recorded_runs(results):
    """[(results file, run)] of every finished run in the guide's files and the other results files of `results`
    (a benchmark's file may hold no runs)."""
    paths = [*sorted((Path(results) / GUIDE).glob("*.json")), *sorted(Path(results).glob("*.json"))]
    found = [(path, load_results(path).get("runs")) for path in paths]
    return [(path, run) for path, runs in found if isinstance(runs, list) for run in runs
            if isinstance(run, dict) and "config" in run and "epochs" in run and "diverged" not in run]


def identity(run):
    return json.dumps(run_identity(config_from_record(run["config"])), sort_keys=True, default=str)


def twins(results, recorded=None):
    """{(machine A, machine B): {run name: (run on A, run on B)}}: the same run (config and seed, config.run_identity)
    trained on two machines (fingerprints), wherever each was recorded: the guide's files (the machine-effect runs,
    the seeds set aside when a point moved to another machine) and every results file of `results` whose runs
    record a fingerprint."""
    runs = [run for _, run in recorded or recorded_runs(results) if run.get("fingerprint")]
    found = {}
    for same in group_by(runs, identity).values():
        for a, b in combinations(same, 2):
            if a["fingerprint"] != b["fingerprint"]:
                first, second = sorted((a, b), key=machine_name)
                found.setdefault((machine_name(first), machine_name(second)), {})[
                    run_name(config_from_record(first["config"]))] = (first, second)
    return found


def unfingerprinted_twins(results, recorded=None):
    """{(results file, its runs' machine as recorded, fingerprinted machine): [(older run, twin)]}: the older runs
    that record no fingerprint, each beside one fingerprinted run of the same configuration and seed per machine:
    which machine computed what they did, and how far a run moves where none did."""
    runs = recorded or recorded_runs(results)
    known = group_by([run for _, run in runs if run.get("fingerprint")], identity)
    found = {}
    for path, run in runs:
        twins_by_machine = {} if run.get("fingerprint") else {
            machine_name(twin): twin for twin in reversed(known.get(identity(run), []))}  # the first one each
        recorded = f"{machines([run])}, torch {run.get('torch', '?')}"
        for machine, twin in twins_by_machine.items():
            found.setdefault((path.name, recorded, machine), []).append((run, twin))
    return found


def bit_for_bit(a, b):
    """Whether two runs recorded the same numbers in every epoch: every metric both record (the seconds aside; an
    older run may record BN's other test accuracies too)."""
    return len(a["epochs"]) == len(b["epochs"]) and all(
        x[k] == y[k] for x, y in zip(a["epochs"], b["epochs"]) for k in x.keys() & y.keys() if k != "seconds")


def machine_name(run):
    """'AMD EPYC, family/model 25/17 (3f2a9c01d4)': a run's CPU and its fingerprint's key, which tells apart two
    machines of one CPU name (another torch, other flags)."""
    return f"{machines([run])} ({fingerprint_key(run['fingerprint'])})"


def machines_section(results):
    """The machine effect: per pair of machines, the mean difference of the same runs' final test accuracy, with its
    paired interval; or that every guide run so far trained on one machine."""
    from plumbing.stats import paired
    recorded = recorded_runs(results)  # read once, for both tables
    found = twins(results, recorded)
    runs = [run for path, run in recorded if path.parent.name == GUIDE.name]
    if not found:
        return (f"Every guide run so far ({len(runs)} runs) trained on {machines(runs)}: no run has a twin on "
                f"another machine yet, so the machine effect is not measured here.") if runs else "No guide runs yet."
    lines = ["| machines, B − A | runs on both | equal bit for bit | A | B | B − A (points) "
             "| 95% interval (paired) | verdict |", "|---|---|---:|---:|---:|---:|---|---|"]
    for (a, b), pairs in found.items():
        on_a = [first["epochs"][-1]["test_acc"] for first, _ in pairs.values()]
        on_b = [second["epochs"][-1]["test_acc"] for _, second in pairs.values()]
        equal = sum(bit_for_bit(*pair) for pair in pairs.values())
        head = (f"| {b} − {a} | {len(pairs)}: {', '.join(pairs)} | {equal} | {sum(on_a) / len(on_a):.2f} | "
                f"{sum(on_b) / len(on_b):.2f} | ")
        if equal == len(pairs):
            lines.append(f"{head}+0.00 | | the same numbers in every epoch |")
            continue
        if len(pairs) < 2:
            lines.append(f"{head}{on_b[0] - on_a[0]:+.2f} | | one run |")
            continue
        result = paired(on_b, on_a)
        verdict = ("**separated**" if result["separated"] else
                   f"not told apart (would detect {result['detectable']:.2f})")
        lines.append(f"{head}{result['difference']:+.2f} | {result['low']:+.2f} to {result['high']:+.2f} | {verdict} |")
    return "\n".join(lines + ["", "The same configuration and seed (named by its run) trained on two machines, final "
                                   "test accuracy: from `results/guide/machine_*.json`, the seeds retrained whole on a "
                                   "new machine, and every results file's runs that record a fingerprint."]
                      + older_runs_table(results, recorded))


def older_runs_table(results, recorded=None):
    """Markdown lines: per older results file without fingerprints, its runs against their fingerprinted twins."""
    from plumbing.stats import paired
    found = unfingerprinted_twins(results, recorded)
    if not found:
        return []
    lines = ["", "Older runs that record no fingerprint, each against a fingerprinted run of the same configuration "
                 "and seed (B − A, final test accuracy): equal numbers say which machine they computed like, and "
                 "where none is equal, how far one run moves between machines. They are never paired with another variant "
                 "(rule 7); the interval here is of the same run's differences between two machines.",
             "", "| results file, B (its CPU, torch) | A | runs | equal in every epoch | B − A (points) "
                 "| 95% interval (paired) | per-run spread: SD, largest |", "|---|---|---:|---:|---:|---|---|"]
    for (name, recorded, machine), pairs in sorted(found.items()):
        old, new = ([run["epochs"][-1]["test_acc"] for run in side] for side in zip(*pairs))
        differences = [b - a for a, b in zip(new, old)]
        where = f"`{name}` ({recorded})"
        equal = sum(bit_for_bit(*pair) for pair in pairs)
        head = f"| {where} | {machine} | {len(pairs)} | {equal} | {sum(differences) / len(differences):+.2f} | "
        if equal == len(pairs) or len(pairs) < 2:
            lines.append(head + "| |")
            continue
        result = paired(old, new)
        spread = statistics.stdev(differences)
        lines.append(head + f"{result['low']:+.2f} to {result['high']:+.2f} | {spread:.2f}, "
                            f"{max(differences, key=abs):+.2f} |")
    return lines


def batch_64_section(results):
    """The batch-64, 3-epoch point of BN, GN and LN from the guide's paired runs: the one source the batch-size and
    learning-rate pages quote for it (each page's own file ran it on another machine)."""
    from plumbing.results import over_seeds
    runs = load_results(Path(results) / GUIDE / "batch_64.json")["runs"]
    cells = []
    for config in (c for c in POINTS["batch_64"] if c.norm in COMPARED and not c.bn_batch):
        finished = [r for r in runs if variant_name(config_from_record(r["config"])) == variant_name(config)
                    and "diverged" not in r]
        if finished:
            spread = over_seeds(r["epochs"][-1]["test_acc"] for r in finished)
            cells.append(f"{label(config)} {spread['mean']:.2f} ± {spread['std']:.2f}% ({len(finished)})")
    if not cells:
        return "Not run yet: `python -m lab.guide --points batch_64` writes `results/guide/batch_64.json`."
    return (f"**The batch-64 point under the protocol** (`results/guide/batch_64.json`, 3 epochs, {seeds_line(runs)}, "
            f"each seed's norms on {machines(runs)}): {', '.join(cells)}, mean ± std over the seeds in brackets; "
            f"the paired "
            f"comparisons: [batch 64](batch_size.md#batch_64).")


SECTIONS = {"GUIDE_POINTS": guide_points_section, "GUIDE_CHOSEN_LR": chosen_lr_section,
            "GUIDE_SHIFT": guide_shift_section, "GUIDE_MACHINES": machines_section,
            "BATCH_64_ONE_SOURCE": batch_64_section,
            # each point's tables on its experiment's page (POINT_PAGES): GUIDE_ADAM_LR, GUIDE_BATCH_2, ...
            **{f"GUIDE_{point.upper()}": one_point_section(point) for point in POINT_PAGES}}
