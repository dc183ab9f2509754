"""A results file and the weights beside it: one JSON file per experiment, {"summary": ..., "runs": [...]}, each run
recorded once (config.same_run), and models/<run name>.pt. No torch here: reading and grouping records needs none.
"""
import json
from pathlib import Path

from plumbing.config import Config, config_from_record, run_name, same_run
from plumbing.system import save_json


def load_results(path):
    """{'summary': ..., 'runs': [...]} of a results file, empty if there is none yet."""
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else {"summary": None, "runs": []}


def find_run(runs, config):
    """The recorded run of `config` in `runs`, or None: the same run (config.same_run), wherever it trained."""
    return next((run for run in runs if same_run(run["config"], config)), None)


def record(path, run, summarize, order):
    """Add (or replace) one finished run in the results file, rewrite its summary; one atomic write."""
    runs = [r for r in load_results(path)["runs"] if not same_run(r["config"], run["config"])]
    runs = sorted(runs + [run], key=order) if order else runs + [run]
    save_json({"summary": summarize(runs), "runs": runs}, path)
    return runs


def model_path(models_dir, run):
    """Where the runner saves a run's final weights: models_dir/<run name>.pt (`run`: a record or a Config)."""
    config = run if isinstance(run, Config) else config_from_record(run["config"])
    return Path(models_dir) / f"{run_name(config)}.pt"


def by_variant(runs):
    """{label: [runs of that variant]}, labels in the order they first appear."""
    groups = {}
    for run in runs:
        groups.setdefault(run["variant"], []).append(run)
    return groups
