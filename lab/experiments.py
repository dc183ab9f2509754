"""The registry of experiments: each one a module of lab/ that owns its configs, its summary over seeds, its results
file, its page under docs/ (`PAGE`), its report sections (`SECTIONS`: block name -> function(results_dir) ->
Markdown) and, where it has one, its figure (`redraw(results_dir, images_dir, data_dir)` -> the paths written, []
when its results file is absent). `python plots.py` and `python report.py` follow this list; a new experiment is its
module, its test, its page, and one line here.
"""
from lab import beyond, guide_report, l1_weights, lr_range, norm_example, shift, study, sweep

# figures drawn, sections listed in this order
EXPERIMENTS = (study, sweep, lr_range, shift, l1_weights, norm_example, guide_report, beyond)


def redraw(results_dir, images_dir, data_dir):
    """Every experiment's figures whose results file is in `results_dir`, into `images_dir`; returns the paths."""
    return [path for experiment in EXPERIMENTS if hasattr(experiment, "redraw")
            for path in experiment.redraw(results_dir, images_dir, data_dir)]


def sections():
    """{block name: function(results_dir) -> Markdown} of every experiment, for report.py to write into the docs."""
    return {name: section for experiment in EXPERIMENTS for name, section in experiment.SECTIONS.items()}
