"""The registry of experiments: each one a module of lab/ that owns its configs, its summary over seeds, its figure
(`redraw(results_dir, images_dir, data_dir)` -> the paths written, [] when its results file is absent), its results
file and its page under docs/. `python plots.py` redraws from this list; a new experiment is its module, its test,
its page, and one line here.
"""
from lab import lr_range, shift, study, sweep

EXPERIMENTS = (study, sweep, lr_range, shift)  # in the order their figures are drawn


def redraw(results_dir, images_dir, data_dir):
    """Every experiment's figures whose results file is in `results_dir`, into `images_dir`; returns the paths."""
    return [path for experiment in EXPERIMENTS for path in experiment.redraw(results_dir, images_dir, data_dir)]
