"""The layering: the core modules (model, config, data, utils, run_folder, system, runner, stats) never import an
experiment, the figures or the report, so a fourth experiment adds files without touching them."""
import ast

import pytest

from conftest import ROOT

CORE = ("model", "config", "data", "utils", "run_folder", "system", "runner", "stats")
ABOVE = {"study", "sweep", "lr_range", "shift", "bn_stats", "input_shifts", "l1_weights", "plots", "report", "bench",
         "main", "norm_example"}


def imported(module):
    tree = ast.parse((ROOT / f"{module}.py").read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("module", CORE)
def test_core_modules_import_no_experiment_figure_or_report(module):
    assert not imported(module) & ABOVE, f"{module}.py imports {sorted(imported(module) & ABOVE)}"
