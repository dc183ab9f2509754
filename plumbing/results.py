"""A results file and the weights beside it: one JSON file per experiment, {"summary": ..., "runs": [...]}, each run
recorded once (config.same_run), and models/<run name>.pt; grouping runs, and `over_seeds`, every experiment's summary
of a measure over seeds. No torch or SciPy here: reading, grouping and averaging records needs neither, and an
experiment's --help imports this module.
"""
import json
import statistics
from pathlib import Path

from plumbing.config import Config, config_from_record, run_name, same_run, variant_key


def load_results(path):
    """{'summary': ..., 'runs': [...]} of a results file, empty if there is none yet."""
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else {"summary": None, "runs": []}


def find_run(runs, config):
    """The recorded run of `config` in `runs`, or None: the same run (config.same_run), wherever it trained."""
    return next((run for run in runs if same_run(run["config"], config)), None)


def record(path, run, summarize, order):
    """Add (or replace) one finished run in the results file, rewrite its summary; one atomic write."""
    from plumbing.system import save_json  # system imports torch: only where a results file is written
    runs = [r for r in load_results(path)["runs"] if not same_run(r["config"], run["config"])]
    runs = sorted(runs + [run], key=order) if order else runs + [run]
    save_json({"summary": summarize(runs), "runs": runs}, path)
    return runs


def model_path(models_dir, run):
    """Where the runner saves a run's final weights: models_dir/<run name>.pt (`run`: a record or a Config)."""
    config = run if isinstance(run, Config) else config_from_record(run["config"])
    return Path(models_dir) / f"{run_name(config)}.pt"


def run_key(run):
    """The variant key of a recorded run ('gn', 'gn2', 'bn_l1', ...): its key in config.VARIANTS and PLAIN."""
    return variant_key(config_from_record(run["config"]))


def group_by(items, key):
    """{key(item): [items with that key]}, keys in the order they first appear: a summary's rows, in order."""
    groups = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return groups


def by_variant(runs):
    """{label: [runs of that variant]}, labels in the order they first appear."""
    return group_by(runs, lambda run: run["variant"])


def finished(runs):
    """The runs whose loss stayed finite to the end: the only ones a summary over seeds averages."""
    return [run for run in runs if "diverged" not in run]


def diverged_seeds(runs):
    """[{'seed': ..., 'epoch': ..., ...}] of the runs that diverged: a summary lists them, it never drops them."""
    return [{"seed": run["config"]["seed"], **run["diverged"]} for run in runs if "diverged" in run]


def over_seeds(values, per_seed=False):
    """Mean, std (0.0 for one seed), min and max over seeds (None each for none), and with `per_seed` the values:
    the one summary over seeds that every table's mean ± std and every figure's min-max band reads."""
    values = list(values)
    spread = ({"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
               "min": min(values), "max": max(values)} if values else dict.fromkeys(("mean", "std", "min", "max")))
    return {**spread, "values": values} if per_seed else spread
