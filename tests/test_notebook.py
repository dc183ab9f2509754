"""The notebook: a smoke run from the repo writes only into a scratch folder, and gives the same numbers with two
workers forked from its kernel; its Colab path: one repository URL, a setup cell that clones it (or unpacks an
uploaded zip of it), and a clear word when it can't."""
import json
import re
import shutil
import subprocess
import zipfile

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


def repo_files():
    """The repo's own files: git's list in a checkout, else every file outside the ignored folders."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files"], capture_output=True, text=True)
    if listed.returncode == 0 and listed.stdout:
        return [path for path in listed.stdout.splitlines() if (ROOT / path).is_file()]
    skip = {".git", ".venv", "runs", "data", "__pycache__", ".pytest_cache", ".ipynb_checkpoints"}
    return [str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file() and not skip & set(p.relative_to(ROOT).parts)]


def execute_a_copy(folder, data_dir, monkeypatch, **parameters):
    """Run the notebook with smoke parameters in a copy of the repo in `folder`; returns (copy, executed cells)."""
    papermill = pytest.importorskip("papermill")
    copy = folder / "repo"
    for path in repo_files():
        (copy / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / path, copy / path)
    monkeypatch.setenv("PYTHONPATH", str(copy))
    papermill.execute_notebook(str(copy / NOTEBOOK.name), str(folder / "out.ipynb"), cwd=str(copy),
                               parameters={"SMOKE": True, "DATA_DIR": str(data_dir), "DEVICE": "cpu", **parameters},
                               kernel_name="python3", progress_bar=False)
    changed = [path for path in repo_files() if (copy / path).read_bytes() != (ROOT / path).read_bytes()]
    assert changed == [], f"a smoke run changed committed files: {changed}"
    written = {str(p.relative_to(copy)) for p in copy.rglob("*") if p.is_file()} - set(repo_files())
    assert written and all(path.startswith("runs/smoke/") or "__pycache__" in path for path in written), written
    return copy, json.loads((folder / "out.ipynb").read_text())["cells"]


@pytest.fixture(scope="module")
def smoke_run(tiny_mnist, tmp_path_factory):
    """One smoke run of the notebook in one worker (the kernel), shared by the tests that read it."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        return execute_a_copy(tmp_path_factory.mktemp("w1"), tiny_mnist, monkeypatch, SWEEP_RERUN=True, WORKERS=1)


def test_a_smoke_run_from_the_repo_leaves_every_committed_file_as_it_was(smoke_run):
    copy, outputs = smoke_run
    check_figures(copy / "runs" / "smoke" / "images")
    shown = [o for c in outputs if c["cell_type"] == "code" for o in c["outputs"] if "image/png" in o.get("data", {})]
    assert len(shown) >= 8  # the norms' groups, both graphs, the train/test panel, three grids, the sweep, ...
    small = json.loads((copy / "runs" / "smoke" / "batch_size_sweep_small.json").read_text())
    assert [(e["norm"], e["batch_size"]) for e in small["summary"]][:3] == [("bn", 8), ("bn", 64), ("bn", 512)]


def test_two_workers_forked_from_the_kernel_give_the_numbers_of_one(smoke_run, tiny_mnist, tmp_path, monkeypatch):
    runs = {1: smoke_run, 2: execute_a_copy(tmp_path, tiny_mnist, monkeypatch, WORKERS=2)}
    studies = {}
    for workers, (copy, outputs) in runs.items():
        training = next(c for c in outputs if "".join(c["source"]).startswith("# The three variants"))
        text = "".join(o.get("text", "") if isinstance(o.get("text", ""), str) else "".join(o["text"])
                       for o in training["outputs"])
        assert f"3 to go (in {'this process' if workers == 1 else 'forked processes'})" in text, text
        assert text.count("epoch  1/1") == 3 and text.count("done: ") == 3, text  # every run's epoch reached the kernel
        recorded = json.loads((copy / "runs" / "smoke" / "study.json").read_text())["runs"]
        studies[workers] = [[{k: v for k, v in row.items() if k != "seconds"} for row in run["epochs"]]
                            for run in recorded]
    assert studies[1] == studies[2]


def test_in_colab_with_a_zip_of_the_repo_uploaded_the_notebook_runs(tiny_mnist, tmp_path, monkeypatch):
    work = tmp_path / "content"
    work.mkdir()
    with zipfile.ZipFile(work / "mnist-normalization-main.zip", "w") as archive:  # as GitHub's "Download ZIP"
        for path in repo_files():
            archive.write(ROOT / path, f"mnist-normalization-main/{path}")
    run_as_colab(tmp_path, monkeypatch, "file:///no/such/repo", tiny_mnist, work=work)  # a clone would fail
    assert (work / "repo" / "lab" / "runner.py").exists()
    check_figures(work / "repo" / "runs" / "smoke" / "images")


def test_the_repository_url_is_written_once_and_the_badges_agree():
    url = repo_url()
    assert url.startswith("https://github.com/")
    repo = url.removeprefix("https://github.com/")
    assert BADGE.findall((ROOT / "README.md").read_text()) == [repo]
    assert BADGE.findall(cells()[0]) == [repo]
    assert sum(source.count("github.com/") for source in cells()[1:]) == 1  # only REPO_URL itself


def run_as_colab(tmp_path, monkeypatch, repo_url, data_dir, work=None):
    """Execute the notebook in `work` (default: an empty folder), in a kernel where `google.colab` is importable."""
    papermill = pytest.importorskip("papermill")
    fake = tmp_path / "fake_colab"
    fake.mkdir()
    (fake / "sitecustomize.py").write_text(FAKE_COLAB)  # runs when the kernel starts
    monkeypatch.setenv("PYTHONPATH", str(fake))  # and the repo's modules are NOT on the path
    if work is None:
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
    assert "upload the repo as a zip" in message and "set REPO_URL" in message
    assert "CalledProcessError" not in message
