"""bench.py notebook: Run all of S5_Normalization.ipynb with its defaults (the assignment's three runs, 20 epochs
on all 60,000 images) in a fresh clone of --repo's HEAD, MNIST from --data-dir through $MNIST_DATA_DIR and
nothing else set, timed from the kernel's start to its end (results/bench_cpu_notebook.json). The executed
notebook is kept at --output when given.
"""
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import papermill
import torch

from lab.bench.timing import save_results
from plumbing.config import bench_file


def run_all(args, repo, scratch):
    """(wall s, the study.json runs, the executed notebook's path) of Run all in a fresh clone under `scratch`."""
    clone = Path(scratch) / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    os.environ["MNIST_DATA_DIR"] = str(Path(args.data_dir).absolute())
    executed = Path(args.output).absolute() if args.output else Path(scratch) / "out.ipynb"
    began = time.perf_counter()
    papermill.execute_notebook(str(clone / "S5_Normalization.ipynb"), str(executed), cwd=str(clone),
                               kernel_name="python3", progress_bar=False, log_output=True, stdout_file=sys.stdout)
    wall = time.perf_counter() - began
    return wall, json.loads((clone / "runs" / "notebook" / "study.json").read_text())["runs"], executed


def run(args):
    """bench.py notebook: Run all, timed; writes results/bench_cpu_notebook.json."""
    repo = Path(args.repo).resolve()
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=True).stdout.strip()
    with tempfile.TemporaryDirectory() as scratch:
        wall, runs, executed = run_all(args, repo, scratch)
        cells = json.loads(executed.read_text())["cells"]
    _, out = save_results(args, torch.device("cpu"), bench_file("cpu", "notebook"), {
        "commit": commit, "wall_s": wall,
        "cell_seconds": [c["metadata"].get("papermill", {}).get("duration") for c in cells],
        "runs": [{"variant": r["variant"], "seed": r["config"]["seed"], "epochs": len(r["epochs"]),
                  "test_acc": r["epochs"][-1]["test_acc"], "seconds": sum(e["seconds"] for e in r["epochs"]),
                  "fingerprint": r.get("fingerprint")} for r in runs]})
    print(f"Run all: {wall / 60:.1f} min at {commit}; wrote {out}")
