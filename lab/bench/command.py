"""bench.py command: what a user runs, `python main.py --norm all` (the study's three variants for --seeds), from
a cold start.

Each round runs it as a fresh process at --workers 1 and 2, the order alternating, so the workers' start, their
imports and MNIST loads and the figures drawn after the runs are all in the wall time. `--repo` times another
checkout's main.py (the commit before a change, say); every number it trains must be equal at the two worker
counts. Writes results/bench_cpu_command_e<epochs>_n<train subset>[_<label>].json.
"""
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from lab.bench.timing import round_robin, save_results
from plumbing.config import bench_file


def main_py(args, repo, folder, workers):
    """The command line of one timed start: repo's main.py, its outputs under `folder`."""
    return [sys.executable, str(repo / "main.py"), "--norm", "all", "--seeds", *map(str, args.seeds),
            "--epochs", str(args.epochs), "--train-subset", str(args.train_subset), "--device", "cpu",
            "--workers", str(workers), "--data-dir", str(Path(args.data_dir).absolute()), "--no-progress",
            "--out", str(folder / "runs"), "--results", str(folder), "--images", str(folder / "images")]


def time_rounds(args, repo):
    """({workers: [wall s]}, {workers: [s inside the runs' epochs]}, {workers: {run: test accuracy}})."""
    walls, run_seconds, accuracies = {1: [], 2: []}, {1: [], 2: []}, {}
    with tempfile.TemporaryDirectory() as scratch:
        for i, order in round_robin((1, 2), args.rounds):
            for workers in order:
                folder = Path(scratch) / f"round{i}_w{workers}"
                began = time.perf_counter()
                subprocess.run(main_py(args, repo, folder, workers), cwd=repo, check=True, stdout=subprocess.DEVNULL)
                walls[workers].append(time.perf_counter() - began)
                runs = json.loads((folder / "study.json").read_text())["runs"]
                run_seconds[workers].append(sum(e["seconds"] for r in runs for e in r["epochs"]))
                accuracies.setdefault(workers, {f"{r['variant']} seed {r['config']['seed']}":
                                                r["epochs"][-1]["test_acc"] for r in runs})
                print(f"round {i + 1}: --workers {workers}: {walls[workers][-1]:.1f} s "
                      f"({run_seconds[workers][-1]:.1f} s inside the runs' epochs)", flush=True)
    return walls, run_seconds, accuracies


def run(args):
    """bench.py command: --workers 1 and 2 from a cold start, alternating; writes the file the docstring names."""
    repo = Path(args.repo).resolve()
    walls, run_seconds, accuracies = time_rounds(args, repo)
    median = {w: statistics.median(t) for w, t in walls.items()}
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    label = f"command_e{args.epochs}_n{args.train_subset}" + (f"_{args.label}" if args.label else "")
    report, out = save_results(args, torch.device("cpu"), bench_file("cpu", label), {
        "commit": commit or None,
        "command": f"python main.py --norm all --seeds {' '.join(map(str, args.seeds))} --epochs {args.epochs} "
                   f"--train-subset {args.train_subset} --workers W",
        "wall_s": walls, "median_wall_s": median, "speedup": median[1] / median[2],
        "epoch_seconds_sum": run_seconds, "test_acc": accuracies[1], "same_accuracies": accuracies[1] == accuracies[2]})
    print(f"median wall: --workers 1 {median[1]:.1f} s, --workers 2 {median[2]:.1f} s, speed-up "
          f"{report['speedup']:.2f}x; same accuracies: {report['same_accuracies']}; wrote {out}")
