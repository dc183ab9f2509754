"""The notebook: it runs end to end with smoke parameters; and its Colab path: one repository URL, a setup cell
that clones it, and a clear word when it can't."""
import json
import os
import re
import subprocess

import pytest

from conftest import ROOT, check_figures

NOTEBOOK = ROOT / "S5_Normalization.ipynb"
BADGE = re.compile(r"colab\.research\.google\.com/github/([\w.-]+/[\w.-]+)/blob/main/S5_Normalization\.ipynb")
FAKE_COLAB = 'import sys, types\nsys.modules["google.colab"] = types.ModuleType("google.colab")\n'


def cells():
    return ["".join(cell["source"]) for cell in json.loads(NOTEBOOK.read_text())["cells"]]


def repo_url():
    parameters = next(source for source in cells() if source.startswith("# Parameters"))
    return re.search(r'^REPO_URL = "([^"]+)"', parameters, re.M)[1]


def test_notebook_runs_end_to_end_with_smoke_parameters(tiny_mnist, tmp_path, monkeypatch):
    papermill = pytest.importorskip("papermill")
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    papermill.execute_notebook(str(ROOT / "S5_Normalization.ipynb"), str(tmp_path / "out.ipynb"),
                               parameters={"SMOKE": True, "DATA_DIR": str(tiny_mnist), "DEVICE": "cpu",
                                           "SWEEP_RERUN": True},
                               cwd=str(tmp_path), kernel_name="python3", progress_bar=False)
    check_figures(tmp_path / "images")
    outputs = json.loads((tmp_path / "out.ipynb").read_text())["cells"]
    shown = [o for c in outputs if c["cell_type"] == "code" for o in c["outputs"] if "image/png" in o.get("data", {})]
    assert len(shown) == 7  # both graphs, the train/test panel, the three grids and the sweep
    small = json.loads((tmp_path / "results" / "batch_size_sweep_small.json").read_text())
    assert [(e["norm"], e["batch_size"]) for e in small["summary"]][:3] == [("bn", 8), ("bn", 64), ("bn", 512)]


def test_the_repository_url_is_written_once_and_the_badges_agree():
    url = repo_url()
    assert url.startswith("https://github.com/")
    repo = url.removeprefix("https://github.com/")
    assert BADGE.findall((ROOT / "README.md").read_text()) == [repo]
    assert BADGE.findall(cells()[0]) == [repo]
    assert sum(source.count("github.com/") for source in cells()[1:]) == 1  # only REPO_URL itself


def run_as_colab(tmp_path, monkeypatch, repo_url, data_dir):
    """Execute the notebook in an empty folder, in a kernel where `google.colab` is importable."""
    papermill = pytest.importorskip("papermill")
    fake = tmp_path / "fake_colab"
    fake.mkdir()
    (fake / "sitecustomize.py").write_text(FAKE_COLAB)  # runs when the kernel starts
    monkeypatch.setenv("PYTHONPATH", str(fake))  # and the repo's modules are NOT on the path
    work = tmp_path / "content"
    work.mkdir()
    papermill.execute_notebook(str(NOTEBOOK), str(tmp_path / "out.ipynb"), cwd=str(work), kernel_name="python3",
                               progress_bar=False, parameters={"SMOKE": True, "DATA_DIR": str(data_dir),
                                                               "DEVICE": "cpu", "REPO_URL": repo_url})
    return work


def test_colab_setup_cell_clones_the_repo_and_the_notebook_runs_from_the_clone(tiny_mnist, tmp_path, monkeypatch):
    if subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True).returncode != 0:
        pytest.skip("not a git checkout: nothing to clone")
    work = run_as_colab(tmp_path, monkeypatch, f"file://{ROOT}", tiny_mnist)
    assert (work / "repo" / "model.py").exists()
    assert (work / "repo" / "images" / "test_accuracy.png").exists()
    assert json.loads((work / "repo" / "results" / "study.json").read_text())["summary"]


def test_a_failed_clone_says_what_to_do(tiny_mnist, tmp_path, monkeypatch):
    papermill = pytest.importorskip("papermill")
    with pytest.raises(papermill.PapermillExecutionError) as failure:
        run_as_colab(tmp_path, monkeypatch, "file:///no/such/repo", tiny_mnist)
    message = str(failure.value)
    assert "Could not fetch the code from file:///no/such/repo" in message
    assert "upload the repo's .py files" in message and "set REPO_URL" in message
    assert "CalledProcessError" not in message
