"""The guide protocol's runs: every point the guide's rows rest on, seed by seed, each seed's variants on one machine.

    python -m lab.guide --data-dir DIR                        # every point, seeds 0-6, into results/guide/<point>.json
    python -m lab.guide --points adam_lr batch_64 --seeds 0   # some points, some seeds
    python -m lab.guide --list                                # each point: variants, seeds recorded, time to go

A point is one situation of the guide (a batch size, a learning rate, the study's recipe) and the variants compared
there. For each seed, all variants of a point train together, so each seed's compared runs share one machine (the
same recorded fingerprint) and the per-seed differences are free of the machine (docs/protocol.md). A seed whose
recorded variants came from another machine and is not complete is trained again whole here; its old records move
to <point>_unpaired.json, so nothing recorded is lost. Only the recipe's 20-epoch runs keep their weights (the
shift study evaluates them).
"""
import argparse
import hashlib
import json
import sys
from dataclasses import replace
from pathlib import Path

from plumbing.cli import PATHS_NOTE, add_data_and_device_flags, add_engine_flags, check_engine_args, engine_from_args
from lab.lr_range import LRS
from plumbing.config import (BN_BATCH_NORMS, COMPARED, DEFAULTS, EXPERIMENT_EPOCHS, RESULTS_DIR, VARIANTS, Config,
                             Engine, config_from_record, default_data_dir, run_name)
from plumbing.results import group_by

GUIDE_DIR = f"{RESULTS_DIR}/guide"
SEEDS = tuple(range(7))  # 6 paired seeds per comparison, and one spare for a seed that splits across machines
EPOCHS = EXPERIMENT_EPOCHS  # the experiments' short recipe; the recipe point trains the study's 20
BATCH_NORMS = (*COMPARED, "gnws", "brn", "frn", "evo")  # BN, GN, LN and the normalizers beyond them
VAL_SPLIT = 10_000       # training images held out where a setting is chosen (never on the test set)


def variants(keys, **settings):
    """Configs (seed 0) of variant `keys` at `settings` over the short recipe without L1."""
    base = Config(epochs=EPOCHS, l1=0.0, **settings)
    return [replace(base, **VARIANTS[key].settings) for key in keys]


def equal_steps(configs, batch_size):
    """The configs at `batch_size` for as many optimizer steps as batch 64 takes in their epochs."""
    return [replace(c, batch_size=batch_size, epochs=c.epochs * batch_size // DEFAULTS.batch_size) for c in configs]


# point -> its variants for one seed, cheapest points first: a session that stops early has whole cheap points
POINTS = {
    "adam_lr": [c for lr in (0.0003, 0.3) for c in variants(COMPARED, lr=lr)],
    "lr_select_sgd": [c for lr in LRS["sgd"] for c in variants(COMPARED, lr=lr, optimizer="sgd", val_split=VAL_SPLIT)],
    "lr_select_adam": [c for lr in LRS["adam"] for c in variants(COMPARED, lr=lr, val_split=VAL_SPLIT)],
    "batch_64": variants(BATCH_NORMS) + [replace(c, bn_batch=k) for k in (2, 4, 8, 16) for c in variants(["bn"])],
    "batch_512": variants(BATCH_NORMS, batch_size=512) + [replace(c, bn_batch=64)
                                                        for c in variants(["bn"], batch_size=512)],
    "batch_8": variants(BATCH_NORMS, batch_size=8),
    "batch_512_equal_steps": equal_steps(variants(COMPARED) + variants(["bn"], lr=0.05), 512),
    "recipe": [replace(c, epochs=DEFAULTS.epochs) for c in variants(("gn", "none", "gn2", "in", "bn"))],
    "batch_2": variants(BATCH_NORMS, batch_size=2),
}
KEEPS_WEIGHTS = ("recipe",)
SELECTION_SEEDS = {"lr_select_sgd": 3, "lr_select_adam": 3}  # choosing an LR needs 3 seeds, not the 6 of a verdict
assert all(c.bn_batch == 0 or c.norm in BN_BATCH_NORMS for configs in POINTS.values() for c in configs)
# point -> the selection point whose validation accuracy chooses each norm's LR; its configs exist once that
# selection has all its seeds (chosen_lrs), and it trains then on the full training set for the test number
CHOSEN = {"sgd_chosen": "lr_select_sgd", "adam_chosen": "lr_select_adam"}
ALL_POINTS = (*POINTS, *CHOSEN)
# the machine effect (docs/protocol.md): one config and seeds 0-5, trained on each machine the guide runs on, into
# machine_<fingerprint key>.json, so that two machines' runs of the same seed can be set side by side
MACHINE_EFFECT = variants(["gn"])[0]
MACHINE_SEEDS = tuple(range(6))


def results_file(point, folder=GUIDE_DIR):
    return Path(folder) / f"{point}.json"


def chosen_lrs(selection, results=GUIDE_DIR):
    """{norm: the LR of the best mean validation accuracy} of a selection point over its SELECTION_SEEDS, an LR
    with a diverged seed never chosen; None until every run of those seeds is recorded."""
    from plumbing.results import find_run, load_results
    runs = load_results(results_file(selection, results))["runs"]
    accuracies = {}
    for config in POINTS[selection]:
        found = [find_run(runs, replace(config, seed=seed)) for seed in range(SELECTION_SEEDS[selection])]
        if None in found:
            return None
        if not any("diverged" in run for run in found):
            accuracies.setdefault(config.norm, {})[config.lr] = sum(r["epochs"][-1]["val_acc"] for r in found)
    return {norm: max(by_lr, key=by_lr.get) for norm, by_lr in accuracies.items()}


def point_configs(point, results=GUIDE_DIR):
    """A point's configs for seed 0; for a CHOSEN point each norm at its chosen LR on the full training set
    ([] while its selection is not complete)."""
    if point in POINTS:
        return POINTS[point]
    selection = CHOSEN[point]
    lrs = chosen_lrs(selection, results) or {}
    configs = {c.norm: replace(c, val_split=0) for c in POINTS[selection] if c.lr == lrs.get(c.norm)}
    return [configs[norm] for norm in dict.fromkeys(c.norm for c in POINTS[selection]) if norm in configs]


def seed_configs(point, seed, data_dir, device, results=GUIDE_DIR):
    return [replace(c, seed=seed, data_dir=data_dir, device=device) for c in point_configs(point, results)]


def variant_name(config):
    """A run's name without its seed: 'bn_e3_lr0.0003', 'gn_e3_bs512', 'bn_e3_nb2', ..."""
    return run_name(replace(config, seed=0)).removesuffix("_seed0")


def summarize(runs):
    """Per variant, in the order first recorded: its label, seeds, final test accuracies and machines (paired
    intervals are the report's job: docs/protocol.md)."""
    groups = group_by(runs, lambda run: variant_name(config_from_record(run["config"])))
    return [{"variant": name, "label": group[0]["variant"], "seeds": [r["config"]["seed"] for r in group],
             "final_test_acc": [None if "diverged" in r else r["epochs"][-1]["test_acc"] for r in group],
             "fingerprints": [fingerprint_key(r.get("fingerprint")) for r in group]}
            for name, group in groups.items()]


def fingerprint_key(fingerprint):
    """A short, stable name for a recorded fingerprint (None: a run recorded without one, never paired)."""
    if not fingerprint:
        return None
    return hashlib.sha1(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:10]


def unpair_a_split_seed(path, configs, here):
    """When some of `configs` (one seed of a point) are recorded on a machine other than `here` (a fingerprint) and
    the rest are not, move those records to <point>_unpaired.json, so the whole seed trains again on one machine.
    Returns how many moved."""
    from plumbing.results import find_run, load_results
    from plumbing.system import save_json
    runs = load_results(path)["runs"]
    mine = [run for run in (find_run(runs, c) for c in configs) if run is not None]
    if not mine or len(mine) == len(configs) or all(run.get("fingerprint") == here for run in mine):
        return 0
    aside = path.with_name(f"{path.stem}_unpaired.json")
    kept = [run for run in runs if not any(run is m for m in mine)]
    save_json({"summary": summarize(load_results(aside)["runs"] + mine),
               "runs": load_results(aside)["runs"] + mine}, aside)
    save_json({"summary": summarize(kept), "runs": kept}, path)
    return len(mine)


def run_guide(points, seeds, data_dir, device, results=GUIDE_DIR, engine=Engine(), log=print):
    """Seed by seed, every point's variants of that seed (trained together, on this machine), each run recorded
    in results/<point>.json as it finishes."""
    from plumbing.system import fingerprint
    here = fingerprint(threads=1)
    for seed in seeds:
        for point in (p for p in points if seed < SELECTION_SEEDS.get(p, len(SEEDS))):
            # a chosen LR exists only once its selection's seeds are in: then the seeds before this one catch up
            for each in ([s for s in seeds if s <= seed] if point in CHOSEN else [seed]):
                configs = seed_configs(point, each, data_dir, device, results)
                if configs:
                    train_seed(point, configs, results, here, engine, log)


def train_seed(point, configs, results, here, engine, log):
    """One seed's variants of a point, together on this machine (fingerprint `here`)."""
    from lab.runner import run_configs
    path = results_file(point, results)
    moved = unpair_a_split_seed(path, configs, here)
    if moved:
        log(f"{point} seed {configs[0].seed}: {moved} run(s) came from another machine and the seed was not "
            f"complete; moved to {path.stem}_unpaired.json, training the whole seed here")
    models = Path(results) / "models" if point in KEEPS_WEIGHTS else None
    run_configs(configs, path, summarize, engine, models_dir=models, order=run_order(point, results), log=log)


def machine_file(here, folder=GUIDE_DIR):
    """Where this machine's (fingerprint `here`) runs of the machine-effect config go."""
    return Path(folder) / f"machine_{fingerprint_key(here)}.json"


def run_machine_effect(data_dir, device, results=GUIDE_DIR, engine=Engine(), log=print):
    """MACHINE_EFFECT at MACHINE_SEEDS on this machine, into its machine_<key>.json."""
    from lab.runner import run_configs
    from plumbing.system import fingerprint
    configs = [replace(MACHINE_EFFECT, seed=seed, data_dir=data_dir, device=device) for seed in MACHINE_SEEDS]
    run_configs(configs, machine_file(fingerprint(threads=1), results), summarize, engine, log=log)


def run_order(point, results=GUIDE_DIR):
    """The order of a point's results file: seed, then the point's own order of variants."""
    position = {variant_name(c): i for i, c in enumerate(point_configs(point, results))}
    return lambda run: (run["config"]["seed"], position.get(variant_name(config_from_record(run["config"])), 0))


def progress(point, seeds, results=GUIDE_DIR):
    """('seeds 0, 1 recorded; seed 2: 3 of 11 runs; to go: 52 runs, about 70 run-minutes at the recorded times',
    runs to go, their estimated minutes, how many of them have no time yet) of a point, over those of `seeds` it
    trains (a selection: its SELECTION_SEEDS); each variant's time is the mean of its finished runs."""
    from plumbing.results import find_run, load_results
    runs = load_results(results_file(point, results))["runs"]
    configs = point_configs(point, results)
    seeds = [seed for seed in seeds if seed < SELECTION_SEEDS.get(point, len(SEEDS))]
    found = {seed: [find_run(runs, replace(c, seed=seed)) for c in configs] for seed in seeds}
    complete = [seed for seed in seeds if None not in found[seed]]
    partial = [f"seed {seed}: {len(configs) - found[seed].count(None)} of {len(configs)} runs" for seed in seeds
               if seed not in complete and any(found[seed])]
    left = [c for seed in seeds for c, run in zip(configs, found[seed]) if run is None]
    minutes = {}  # variant -> mean recorded minutes of training and testing, over its runs that finished
    for run in (run for run in runs if "diverged" not in run):
        minutes.setdefault(variant_name(config_from_record(run["config"])), []).append(
            sum(epoch["seconds"] for epoch in run["epochs"]) / 60)
    known = [sum(m) / len(m) for c in left if (m := minutes.get(variant_name(c)))]
    estimate = (f", about {sum(known):.0f} run-minutes at the recorded times"
                + (f" ({len(left) - len(known)} not timed yet)" if len(known) < len(left) else "") if known else "")
    recorded = f"seeds {', '.join(map(str, complete))} recorded" if complete else "no seed recorded"
    line = "; ".join([recorded, *partial, f"to go: {len(left)} runs{estimate}" if left else "nothing to go"])
    return line, len(left), sum(known), len(left) - len(known)


def make_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=PATHS_NOTE,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--points", nargs="+", default=list(ALL_POINTS), choices=list(ALL_POINTS),
                   help="guide points to train (a *_chosen point waits for its selection's seeds)")
    p.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS), help="seeds, one run per variant each")
    p.add_argument("--list", action="store_true",
                   help="list the points, their variants, the seeds recorded and the runs to go with their time; "
                        "train nothing")
    p.add_argument("--machine-effect", action="store_true",
                   help="train only the machine-effect runs (GN, batch 64, 3 epochs, seeds 0-5) on this machine, into "
                        "machine_<fingerprint>.json: run once on each machine the guide's runs come from")
    add_data_and_device_flags(p)
    p.add_argument("--out", default="runs/guide", help="folder for the run folders")
    p.add_argument("--results", default=GUIDE_DIR, help="folder for <point>.json and models/")
    add_engine_flags(p)
    return p


def main(argv=None):
    args = make_parser().parse_args(argv)
    check_engine_args(make_parser(), args)
    if args.list:
        runs_to_go = minutes_to_go = untimed = 0
        for point in args.points:
            configs = point_configs(point, args.results)
            print(f"{point}: " + (", ".join(variant_name(c) for c in configs) if configs else
                                  f"each norm at its LR chosen by {CHOSEN.get(point)}, once that has "
                                  f"{SELECTION_SEEDS.get(CHOSEN.get(point))} seeds"))
            if configs:
                line, left, minutes, not_timed = progress(point, args.seeds, args.results)
                print("  " + line)
                runs_to_go, minutes_to_go, untimed = runs_to_go + left, minutes_to_go + minutes, untimed + not_timed
        notes = [f"{untimed} runs not timed yet"] * bool(untimed) + [
            "a point waiting for its selection not counted"] * (not all(point_configs(p, args.results)
                                                                       for p in args.points))
        print(f"in all: {runs_to_go} runs to go over seeds {', '.join(map(str, args.seeds))}, about "
              f"{minutes_to_go / 60:.1f} run-hours at the recorded times"
              + (f" ({'; '.join(notes)})" if notes else ""))
        return 0
    from lab.runner import run_command
    data_dir = args.data_dir or default_data_dir()
    if args.machine_effect:
        job = lambda: run_machine_effect(data_dir, args.device, args.results, engine_from_args(args))  # noqa: E731
    else:
        job = lambda: run_guide(args.points, args.seeds, data_dir, args.device, args.results,  # noqa: E731
                                engine_from_args(args))
    return run_command(job, args.results, data_dir, args.device, args.address)


if __name__ == "__main__":
    sys.exit(main())
