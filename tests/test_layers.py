"""The house: the root holds what a student opens and what a user types; imports only go down, plumbing/ <- model.py
<- utils.py <- lab/ <- the root's commands, with no cycle. The graph is read from every module with `ast`, imports
inside functions included."""
import ast
import subprocess
import sys

import pytest

from conftest import ROOT

ROOT_COMMANDS = {"main", "plots", "report", "bench"}
LAYERS = {"plumbing": 0, "model": 1, "utils": 2, "lab": 3, **dict.fromkeys(ROOT_COMMANDS, 4)}
ROOT_FILES = {"model.py", "utils.py", "main.py", "plots.py", "report.py", "bench.py", "S5_Normalization.ipynb",
              "README.md", "BENCHMARKS.md", "requirements.txt", "requirements-dev.txt", "requirements-cluster.txt",
              "pytest.ini", ".gitignore"}
ROOT_FOLDERS = {"plumbing", "lab", "images", "docs", "results", "tests", ".ci"}


def modules():
    """{dotted name: path} of every module of the repo outside tests/."""
    paths = [*ROOT.glob("*.py"), *(ROOT / "plumbing").rglob("*.py"), *(ROOT / "lab").rglob("*.py")]
    return {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p for p in paths}


def imports(path, known):
    """The repo modules that the file at `path` imports anywhere in it (functions included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        found |= {name for name in names if name in known}
    return found


def graph():
    known = modules()
    return {name: imports(path, known) - {name} for name, path in known.items()}


def layer(name):
    return LAYERS[name.split(".")[0]]


def test_the_root_holds_what_a_student_opens_and_a_user_types():
    tracked = subprocess.run(["git", "-C", str(ROOT), "ls-files"], capture_output=True, text=True)
    if tracked.returncode != 0 or not tracked.stdout:
        pytest.skip("not a git checkout")
    top = {path.split("/")[0] for path in tracked.stdout.splitlines()}
    assert top <= ROOT_FILES | ROOT_FOLDERS, sorted(top - ROOT_FILES - ROOT_FOLDERS)
    assert {f"{name}.py" for name in ROOT_COMMANDS} <= top


def test_every_module_has_a_layer():
    assert all(name.split(".")[0] in LAYERS for name in graph()), sorted(graph())


def test_imports_only_go_down():
    upward = [(a, b) for a, targets in graph().items() for b in targets if layer(b) > layer(a)]
    assert upward == [], upward


def test_utils_imports_no_repo_module_but_the_model():
    assert graph()["utils"] <= {"model"}


def test_there_is_no_import_cycle():
    edges, state, cycles = graph(), {}, []

    def visit(node, path):
        state[node] = "open"
        for target in sorted(edges[node]):
            if state.get(target) == "open":
                cycles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert cycles == [], cycles


def test_the_graph_sees_imports_inside_functions(tmp_path):
    (tmp_path / "a.py").write_text("def f():\n    from lab.study import run_study\n")
    assert imports(tmp_path / "a.py", {"lab.study"}) == {"lab.study"}


@pytest.mark.parametrize("command", ["main.py", "plots.py", "report.py", "bench.py", "-m lab.sweep", "-m lab.lr_range",
                                     "-m lab.shift", "-m lab.guide", "-m lab.l1_weights", "-m lab.norm_example"])
def test_every_command_answers_help(command):
    result = subprocess.run([sys.executable, *command.split(), "--help"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and "usage:" in result.stdout, result.stderr[-2000:]
