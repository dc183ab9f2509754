"""The guide protocol's runs: every point the guide's rows rest on, seed by seed, each seed's variants on one machine.

    python -m lab.guide --data-dir DIR                        # every point, seeds 0-6, into results/guide/<point>.json
    python -m lab.guide --points adam_lr batch_64 --seeds 0   # some points, some seeds
    python -m lab.guide --list                                # the points and their variants, nothing trained

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


def results_file(point, folder=GUIDE_DIR):
    return Path(folder) / f"{point}.json"


def seed_configs(point, seed, data_dir, device):
    return [replace(c, seed=seed, data_dir=data_dir, device=device) for c in POINTS[point]]


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
    from lab.runner import run_configs
    from plumbing.system import fingerprint
    here = fingerprint(threads=1)
    for seed in seeds:
        for point in (p for p in points if seed < SELECTION_SEEDS.get(p, len(SEEDS))):
            path, configs = results_file(point, results), seed_configs(point, seed, data_dir, device)
            moved = unpair_a_split_seed(path, configs, here)
            if moved:
                log(f"{point} seed {seed}: {moved} run(s) came from another machine and the seed was not complete; "
                    f"moved to {path.stem}_unpaired.json, training the whole seed here")
            models = Path(results) / "models" if point in KEEPS_WEIGHTS else None
            run_configs(configs, path, summarize, engine, models_dir=models, order=run_order(point), log=log)


def run_order(point):
    """The order of a point's results file: seed, then the point's own order of variants."""
    position = {variant_name(c): i for i, c in enumerate(POINTS[point])}
    return lambda run: (run["config"]["seed"], position.get(variant_name(config_from_record(run["config"])), 0))


def make_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=PATHS_NOTE,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--points", nargs="+", default=list(POINTS), choices=list(POINTS), help="guide points to train")
    p.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS), help="seeds, one run per variant each")
    p.add_argument("--list", action="store_true", help="list the points and their variants; train nothing")
    add_data_and_device_flags(p)
    p.add_argument("--out", default="runs/guide", help="folder for the run folders")
    p.add_argument("--results", default=GUIDE_DIR, help="folder for <point>.json and models/")
    add_engine_flags(p)
    return p


def main(argv=None):
    args = make_parser().parse_args(argv)
    check_engine_args(make_parser(), args)
    if args.list:
        for point in args.points:
            print(f"{point}: " + ", ".join(variant_name(c) for c in POINTS[point]))
        return 0
    from lab.runner import run_command
    data_dir = args.data_dir or default_data_dir()
    return run_command(lambda: run_guide(args.points, args.seeds, data_dir, args.device, args.results,
                                         engine_from_args(args)), args.results, data_dir, args.device, args.address)


if __name__ == "__main__":
    sys.exit(main())
