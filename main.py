"""Train the MNIST CNN with BN, GN, LN (or another norm) from a shell; `--norm all` runs the whole study.

    python main.py --norm gn --epochs 20
    python main.py --norm all --epochs 20 --seeds 0 1 2      # on every core, into runs/study/
    python main.py --resume runs/gn_seed0
"""
import argparse
import sys
from dataclasses import fields, replace
from pathlib import Path

from plumbing.cli import PATHS_NOTE, add_data_and_device_flags, add_engine_flags, check_engine_args
from plumbing.config import (BN_BATCH_NORMS, IMAGES_DIR, NORMS, OPTIMIZERS, RESULTS_DIR, STUDY_L1, STUDY_VARIANTS,
                             VARIANTS, WIDTHS, Config, default_data_dir, run_name)
# torch and everything that imports it come inside the functions, after the flags are checked: --help and a bad
# flag are answered in well under a second

STUDY_DIR = "runs/study"  # --norm all trains into a fresh folder; --results results adds to the committed study


def make_parser():
    d = Config()
    p = argparse.ArgumentParser(description="Batch/Group/Layer Normalization on MNIST.", epilog=PATHS_NOTE,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add = p.add_argument_group("the run").add_argument
    add("--norm", default=d.norm, choices=[*NORMS, "all"],
        help="normalization layers; 'all' runs the study: " + ", ".join(VARIANTS[k].label for k in STUDY_VARIANTS))
    add("--epochs", type=int, default=d.epochs, help="training epochs")
    add("--batch-size", type=int, default=d.batch_size, help="training batch size")
    add("--lr", type=float, default=d.lr, help="peak learning rate of the one-cycle schedule")
    add("--optimizer", default=d.optimizer, choices=OPTIMIZERS, help="optimizer")
    add("--l1", type=float, default=None,
        help=f"L1 lambda on conv weights; unset: 0 for one run, {STUDY_L1} for BN+L1 in the study")
    add("--gn-groups", type=int, default=d.gn_groups, help="GroupNorm groups for --norm gn")
    add("--bn-batch", type=int, default=d.bn_batch,
        help="BN's normalization batch (as on several devices without SyncBN): with --norm bn or brn, each slice of "
             "K training images is normalized by its own statistics; 0: the whole batch")
    add("--dropout", type=float, default=d.dropout, help="dropout probability")
    add("--degrees", type=float, default=d.degrees, help="max random rotation in degrees")
    add("--shift", type=float, default=d.shift, help="max random shift in pixels")
    add("--seed", type=int, default=d.seed, help="random seed")
    add("--val-split", type=int, default=d.val_split, help="training images held out as validation")
    add("--train-subset", type=int, default=d.train_subset, help="train on the first N images (0: all)")
    add("--compile", action="store_true", default=d.compile,
        help="torch.compile the model; the first epoch compiles (on a 2-core CPU it did not pay: BENCHMARKS.md)")
    add("--out", default="runs", help="folder for run folders (metrics.json, checkpoints, model.pt)")
    add("--resume", metavar="RUN_DIR", default=None, help="continue an interrupted run")
    add("--overwrite", action="store_true", help="replace an existing run folder of the same name")
    add("--no-progress", action="store_true", help="no progress bar, only one line per epoch")
    add("--dry-run", action="store_true", help="smoke test: 1 epoch on 1,000 training images")
    add = p.add_argument_group("many runs").add_argument
    add("--seeds", type=int, nargs="+", default=None, help="several seeds, one run each")
    add("--variants", nargs="+", default=list(STUDY_VARIANTS), choices=list(VARIANTS),
        help="--norm all: the variants to train (other than the default: results in RESULTS/study_<keys>.json)")
    add("--results", default=STUDY_DIR, help=f"--norm all: folder for study.json and models/ (final weights); "
                                             f"'{RESULTS_DIR}' adds to the committed study")
    add("--images", default=None, help=f"--norm all: folder for the study's figures (unset: RESULTS/images; "
                                       f"'{IMAGES_DIR}' with --results {RESULTS_DIR})")
    where = p.add_argument_group("where it runs")
    add_data_and_device_flags(where, d.device)
    add_engine_flags(where)
    return p


def check_args(parser, args):
    """parser.error (exit 2, nothing written) for values no run can use."""
    rules = [(args.epochs >= 1, "--epochs must be >= 1"), (args.batch_size >= 1, "--batch-size must be >= 1"),
             (args.lr > 0, "--lr must be > 0"), (args.l1 is None or args.l1 >= 0, "--l1 must be >= 0"),
             (args.gn_groups >= 1 and all(w % args.gn_groups == 0 for w in WIDTHS),
              f"--gn-groups must divide every layer width {WIDTHS}, e.g. 1, 2 or 4"),
             (0 <= args.dropout < 1, "--dropout must be in [0, 1)"), (args.bn_batch >= 0, "--bn-batch must be >= 0"),
             (args.bn_batch == 0 or args.batch_size % args.bn_batch == 0, "--bn-batch must divide --batch-size"),
             (args.bn_batch == 0 or args.norm in BN_BATCH_NORMS, "--bn-batch is only for --norm bn or brn"),
             (args.val_split >= 0 and args.train_subset >= 0, "--val-split and --train-subset must be >= 0")]
    for ok, message in rules:
        if not ok:
            parser.error(message)
    check_engine_args(parser, args)


def config_from_args(args):
    names = {f.name for f in fields(Config)}
    values = {k: v for k, v in vars(args).items() if k in names and v is not None}
    config = Config(**{**values, "data_dir": args.data_dir or default_data_dir()})
    return replace(config, epochs=1, train_subset=1000) if args.dry_run else config


def train(args, config):
    """Load MNIST onto the device once, then train one run per seed, each into its own run folder."""
    from lab.train import fit, get_device
    from plumbing.data import load_mnist
    from plumbing.system import keep_freed_memory, new_run_dir
    device = get_device(config.device)
    if device.type == "cpu":
        keep_freed_memory()  # process-wide: faster CPU steps, same arithmetic (see plumbing/system.py)
    splits = load_mnist(config.data_dir, device, config.val_split, config.train_subset)
    for seed in args.seeds or [config.seed]:
        run = replace(config, seed=seed)
        run_dir = Path(args.resume) if args.resume else new_run_dir(args.out, run_name(run), args.overwrite)
        print(f"run {run_dir}: {run.norm.upper()} l1={run.l1} seed={run.seed} on {device}")
        metrics, _ = fit(run, splits, run_dir, progress=not args.no_progress)
        print(f"final test accuracy {metrics['epochs'][-1]['test_acc']:.2f}% ({metrics['params']} parameters); "
              f"wrote {run_dir}/metrics.json and model.pt")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = make_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    from lab.commands import STOPS, check_outputs, error_message, given_flags, resume_config, study_command
    from lab.train import get_device
    try:
        config = config_from_args(args)
        if args.resume:
            config, done = resume_config(parser, args, given_flags(parser, argv, args), config)
            if done >= config.epochs:
                print(f"{args.resume} already finished all {config.epochs} epochs; nothing to resume.")
                return 0
        try:
            if not (args.norm == "all" and args.address):  # on a cluster the nodes' devices count, not this one's
                get_device(config.device)
        except ValueError as error:
            parser.error(str(error))
        check_outputs(args)
        if args.norm == "all":
            return study_command(config, args)
        train(args, config)
    except STOPS as error:
        code, message = error_message(error)
        print(message, file=sys.stderr)
        return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
