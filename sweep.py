"""Where BN, GN and LN part ways: a batch-size sweep, BN's batch-statistics gap, and the LR rule behind it.

    python sweep.py --data-dir DIR                 # the whole sweep; run it again to go on after a stop
    python sweep.py --shard 1/2 --data-dir DIR     # every second run (the other half: --shard 2/2)
    python sweep.py --merge OTHER.json             # fold another machine's results file into ours
    python sweep.py --select-lr --data-dir DIR     # the validation runs that chose the LR rule

Every run is a `utils.fit` run (no L1, so only the normalization differs) in its own folder under
--out. A finished run goes into the results file at once, and runs already there are skipped, so
committing that file carries the progress to another machine; an interrupted run resumes from its
checkpoint. Shards split the list of runs, so machines can share the work and merge their files.
"""
import argparse
import copy
import json
import math
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn as nn

from data import DataError, DeviceLoader, default_data_dir, load_mnist
from model import NORMS
from system import RunFolderError, WriteError, keep_freed_memory, locked, save_json
from utils import (Config, Interrupted, NonFiniteLoss, WriteFailed, continue_or_new_run_dir, eval_batch_size,
                   evaluate, fit, get_device, same_config)

ROOT = Path(__file__).resolve().parent
BATCH_SIZES = (2, 4, 8, 16, 32, 64, 128, 256, 512)
SEEDS = (0, 1, 2)
EPOCHS = 3  # the same budget at every batch size: 3 epochs, i.e. 180,000 training images
BASE_LR, BASE_BATCH, LR_CAP = 0.01, 64, 0.05  # the study's peak LR at its batch size, and a ceiling
LR_RULES = {"constant": lambda b: 1.0, "sqrt": lambda b: math.sqrt(b / BASE_BATCH),
            "linear": lambda b: b / BASE_BATCH}
LR_RULE = "constant"  # chosen on the validation split by --select-lr: results/batch_size_lr_rule.json
SELECTION_BATCH_SIZES, SELECTION_VAL_SPLIT = (512, 4), 10_000  # where the rules differ most
PRECISE_IMAGES, PRECISE_BATCH = 10_000, 500  # BN statistics recomputed over this many training images


def peak_lr(batch_size, rule=LR_RULE):
    """The peak learning rate of the one-cycle schedule for `batch_size` under `rule`, capped."""
    return min(LR_CAP, BASE_LR * LR_RULES[rule](batch_size))


def sweep_configs(base, seeds=SEEDS, batch_sizes=BATCH_SIZES, norms=NORMS):
    """Every run of the sweep, seed-major, so a partial sweep already holds whole seeds."""
    return [replace(base, norm=norm, batch_size=b, lr=peak_lr(b), seed=seed, l1=0.0)
            for seed in seeds for b in batch_sizes for norm in norms]


def selection_configs(base, norms=NORMS):
    """The LR-rule selection runs: every rule and norm at the batch sizes where the rules differ most."""
    return [replace(base, norm=norm, batch_size=b, lr=peak_lr(b, rule), seed=0, l1=0.0,
                    val_split=SELECTION_VAL_SPLIT)
            for b in SELECTION_BATCH_SIZES for norm in norms for rule in LR_RULES]


def run_name(config):
    return f"{config.norm}_bs{config.batch_size}_lr{config.lr:.3g}_seed{config.seed}"


# ---- BN with other statistics ---------------------------------------------------------------
def with_batch_statistics(model):
    """A copy of `model` whose BatchNorm layers normalize with each batch's own statistics, even in eval mode."""
    model = copy.deepcopy(model)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):  # no running statistics: BN falls back on the batch's
            m.track_running_stats, m.running_mean, m.running_var, m.num_batches_tracked = False, None, None, None
    return model


@torch.no_grad()
def with_precise_statistics(model, images, labels, degrees, shift, seed=0):
    """A copy of `model` whose BN running statistics are recomputed after training (Wu & Johnson, 2021).

    A plain average (momentum=None) over PRECISE_IMAGES augmented training images in batches of
    PRECISE_BATCH, large enough that each batch's statistics are close to the population's;
    dropout stays off, as at test time.
    """
    model = copy.deepcopy(model).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
            m.train()
    loader = DeviceLoader(images, labels, PRECISE_BATCH, shuffle=True, degrees=degrees, shift=shift, seed=seed)
    for _, (x, _) in zip(range(PRECISE_IMAGES // PRECISE_BATCH), loader):
        model(x)
    return model.eval()


def bn_statistics_metrics(model, splits, config):
    """Test loss and accuracy of a BN model with batch statistics and with recomputed running statistics.

    Batch statistics: test batches of the training batch size, drawn in a fixed random order, as
    in training. The model passed in, and its running statistics, are left untouched.
    """
    test_x, test_y = splits["test"]
    order = torch.randperm(len(test_y), generator=torch.Generator().manual_seed(0)).to(test_y.device)
    batch = evaluate(with_batch_statistics(model), DeviceLoader(test_x[order], test_y[order], config.batch_size))
    precise_model = with_precise_statistics(model, *splits["train"], config.degrees, config.shift, config.seed)
    precise = evaluate(precise_model, DeviceLoader(test_x, test_y, eval_batch_size(test_y.device)))
    return {"test_loss_batch_stats": batch["loss"], "test_acc_batch_stats": batch["acc"],
            "test_loss_precise_stats": precise["loss"], "test_acc_precise_stats": precise["acc"]}


# ---- the results file -------------------------------------------------------------------------
def load_results(path):
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else {"summary": [], "runs": []}


def find_run(runs, config):
    return next((run for run in runs if same_config(run["config"], config)), None)


def run_order(run):
    c = run["config"]
    return c["seed"], c["batch_size"], NORMS.index(c["norm"]), c["lr"]


def record(path, new_runs, summarize):
    """Add finished runs to the results file at `path`, replacing runs of the same config.

    Under a lock, so shards on one machine can share the file; `summarize(runs)` rewrites its summary.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with locked(path.with_name(f".{path.name}.lock")):
        results = load_results(path)
        runs = [r for r in results["runs"] if not any(same_config(r["config"], n["config"]) for n in new_runs)]
        runs = sorted(runs + list(new_runs), key=run_order)
        save_json({"summary": summarize(runs), "runs": runs}, path)


def spread(values):
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def summarize_sweep(runs):
    """Per norm and batch size: the final test accuracy over seeds, seconds per epoch, BN's other accuracies."""
    groups = {}
    for run in runs:
        groups.setdefault((run["config"]["norm"], run["config"]["batch_size"]), []).append(run)
    summary = []
    for (norm, batch_size), group in sorted(groups.items(), key=lambda g: (NORMS.index(g[0][0]), g[0][1])):
        last = [run["epochs"][-1] for run in group]
        entry = {"norm": norm, "batch_size": batch_size, "lr": group[0]["config"]["lr"],
                 "epochs": group[0]["config"]["epochs"], "seeds": [run["config"]["seed"] for run in group],
                 "test_acc": spread([row["test_acc"] for row in last]),
                 "seconds_per_epoch": statistics.mean(row["seconds"] for run in group for row in run["epochs"])}
        for key in ("test_acc_batch_stats", "test_acc_precise_stats"):
            if all(key in row for row in last):
                entry[key] = spread([row[key] for row in last])
        summary.append(entry)
    return summary


def summarize_selection(runs):
    """Per LR rule: validation accuracy at every (norm, batch size) and its mean; the best rule first."""
    by_rule = {}
    for run in runs:
        c = run["config"]
        rule = next(r for r in LR_RULES if math.isclose(peak_lr(c["batch_size"], r), c["lr"]))
        by_rule.setdefault(rule, {})[f"{c['norm']}/{c['batch_size']}"] = run["epochs"][-1]["val_acc"]
    summary = [{"rule": rule, "mean_val_acc": statistics.mean(accs.values()), "val_acc": accs}
               for rule, accs in by_rule.items()]
    return sorted(summary, key=lambda s: -s["mean_val_acc"])


# ---- running it ---------------------------------------------------------------------------------
def train_and_measure(config, splits, out, log=print):
    """Fit (or resume, or reload) one run; for BN add the batch- and recomputed-statistics accuracies."""
    run_dir = continue_or_new_run_dir(out, run_name(config), config)
    label = f"{config.norm.upper()} b{config.batch_size} s{config.seed}"
    metrics, model = fit(config, splits, run_dir, label, progress=False, log=log)
    if config.norm == "bn":
        metrics["epochs"][-1].update(bn_statistics_metrics(model, splits, config))
        save_json(metrics, run_dir / "metrics.json")
    return {"variant": config.norm.upper(), **metrics}


def remaining_seconds(todo, seconds_by_batch):
    """Estimate for the runs in `todo` from the measured runs: same batch size if seen, else the mean run."""
    if not seconds_by_batch:
        return None
    overall = statistics.mean(s for times in seconds_by_batch.values() for s in times)
    return sum(statistics.mean(seconds_by_batch.get(c.batch_size, [overall])) for c in todo)


def run_all(configs, splits, out, results_path, summarize, log=print):
    """Fit every config not yet recorded in `results_path`, recording each as soon as it ends."""
    recorded = load_results(results_path)["runs"]
    todo = [c for c in configs if not find_run(recorded, c)]
    log(f"{len(configs) - len(todo)} of {len(configs)} runs already in {results_path}; {len(todo)} to go")
    seconds_by_batch = {}
    while todo:
        config = todo.pop(0)
        start = time.perf_counter()
        run = train_and_measure(config, splits, out, log)
        record(results_path, [run], summarize)
        seconds_by_batch.setdefault(config.batch_size, []).append(time.perf_counter() - start)
        eta = remaining_seconds(todo, seconds_by_batch)
        log(f"done: {run_name(config)}, test acc {run['epochs'][-1]['test_acc']:.2f}%, "
            f"{seconds_by_batch[config.batch_size][-1]:.0f} s | {len(todo)} runs left"
            + (f", about {eta / 60:.0f} min" if todo else ""))


def shard_of(configs, shard):
    """The runs of shard (k, n): every n-th run, starting at the k-th (1-based)."""
    k, n = shard
    return configs[k - 1::n]


def parse_shard(text):
    try:
        k, n = map(int, text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard takes K/N, e.g. 1/2; got {text!r}") from None
    if not 1 <= k <= n:
        raise argparse.ArgumentTypeError(f"--shard K/N needs 1 <= K <= N; got {text!r}")
    return k, n


def make_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add = p.add_argument
    add("--data-dir", default=None, help="MNIST root; unset: $MNIST_DATA_DIR, else ./data")
    add("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"], help="device")
    add("--norms", nargs="+", default=list(NORMS), choices=NORMS, help="normalizations")
    add("--batch-sizes", type=int, nargs="+", default=list(BATCH_SIZES), help="training batch sizes")
    add("--seeds", type=int, nargs="+", default=list(SEEDS), help="seeds, one run each")
    add("--epochs", type=int, default=EPOCHS, help="epochs of every run (the same at every batch size)")
    add("--shard", type=parse_shard, default=(1, 1), help="K/N: run only every N-th run, from the K-th")
    add("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    add("--out", default="runs/batch_size", help="folder for the run folders")
    add("--results", default=None, help="results JSON (unset: results/batch_size_sweep.json, "
                                        "or results/batch_size_lr_rule.json with --select-lr)")
    add("--images", default="images", help="folder for the figure batch_size.png")
    add("--select-lr", action="store_true", help="run the LR-rule selection on the validation split instead")
    add("--merge", nargs="+", metavar="JSON", default=None, help="fold these results files into --results")
    return p


def main(argv=None):
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.epochs < 1 or min(args.batch_sizes) < 1:
        parser.error("--epochs and every --batch-sizes value must be >= 1")
    default_results = "batch_size_lr_rule.json" if args.select_lr else "batch_size_sweep.json"
    results = Path(args.results or ROOT / "results" / default_results)
    summarize = summarize_selection if args.select_lr else summarize_sweep
    if args.merge:
        record(results, [run for path in args.merge for run in load_results(path)["runs"]], summarize)
        print(f"merged {len(args.merge)} file(s) into {results}")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        device = get_device(args.device)
    except ValueError as error:
        parser.error(str(error))
    if device.type == "cpu":
        keep_freed_memory()  # process-wide: faster CPU steps, same arithmetic (see system.py)
    base = Config(epochs=args.epochs, data_dir=args.data_dir or default_data_dir(), device=args.device)
    configs = (selection_configs(base, args.norms) if args.select_lr
               else sweep_configs(base, args.seeds, args.batch_sizes, args.norms))
    try:
        splits = load_mnist(base.data_dir, device, SELECTION_VAL_SPLIT if args.select_lr else 0)
        run_all(shard_of(configs, args.shard), splits, args.out, results, summarize)
    except (DataError, RunFolderError, WriteError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except (NonFiniteLoss, Interrupted, WriteFailed) as error:
        print(f"\nstopped in {error}; finished runs are in {results}. Run the same command again to go on.",
              file=sys.stderr)
        return {Interrupted: 130, NonFiniteLoss: 3, WriteFailed: 4}[type(error)]
    if not args.select_lr:
        from plots import save_batch_size_figure  # matplotlib only where a figure is drawn
        print(f"wrote {save_batch_size_figure(load_results(results), args.images)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
