"""bench.py workers: the runner's speed-up from a second worker, not the model's speed.

The same short study runs (the study's three variants, seeds 0 and 1, 1 epoch on 20,000 images) through the
runner at --workers 1 (one after another in this process) and --workers 2 (two worker processes, forked from
this one on Linux), in alternating rounds, and whether every run's accuracy is the same at both
(results/bench_cpu_workers.json).
"""
import statistics
import tempfile
import time
from pathlib import Path

import torch

from lab.bench.timing import round_robin, save_results
from lab.runner import run_configs
from lab.study import study_configs, summarize
from plumbing.config import Config, Engine, bench_file, config_from_record, run_name


def run(args):
    """bench.py workers: the runner with 1 and 2 workers (forked processes), alternating rounds."""
    base = Config(epochs=1, train_subset=20_000, device="cpu", data_dir=args.data_dir)
    configs = study_configs(base, seeds=[0, 1])
    walls, accuracies = {1: [], 2: []}, {}
    with tempfile.TemporaryDirectory() as scratch:
        for i, order in round_robin((1, 2), args.rounds):
            for workers in order:
                folder = Path(scratch) / f"round{i}_w{workers}"
                began = time.perf_counter()
                runs = run_configs(configs, folder / "r.json", summarize, Engine(str(folder / "runs"), workers),
                                   log=lambda line: None)
                walls[workers].append(time.perf_counter() - began)
                accuracies.setdefault(workers, {run_name(config_from_record(r["config"])): r["epochs"][-1]["test_acc"]
                                                for r in runs})  # by name: runs come back in any order
                print(f"round {i + 1}: --workers {workers}: {walls[workers][-1]:.1f} s", flush=True)
    median = {w: statistics.median(t) for w, t in walls.items()}
    report, out = save_results(args, torch.device("cpu"), bench_file("cpu", "workers"), {
        "runs": [f"{c.norm}{'+L1' if c.l1 else ''} seed {c.seed}" for c in configs],
        "epochs": 1, "train_subset": base.train_subset, "wall_s": walls, "median_wall_s": median,
        "speedup": median[1] / median[2], "test_acc": accuracies[1], "same_accuracies": accuracies[1] == accuracies[2]})
    print(f"median wall: --workers 1 {median[1]:.1f} s, --workers 2 {median[2]:.1f} s, speed-up "
          f"{report['speedup']:.2f}x; same accuracies: {report['same_accuracies']}; wrote {out}")
