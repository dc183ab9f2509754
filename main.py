"""Train the MNIST CNN with BN, GN, LN (or another norm) from a shell; `--norm all` runs the whole study.

    python main.py --norm gn --epochs 20
    python main.py --norm all --epochs 20 --seeds 0 1 2      # on every core; --workers 1: in this process
    python main.py --resume runs/gn_seed0
"""
import argparse
import json
import shlex
import sys
from dataclasses import fields, replace
from pathlib import Path

from cli import PATHS_NOTE, add_data_and_device_flags, add_engine_flags, check_engine_args, engine_from_args
from config import (BN_BATCH_NORMS, IDENTITY, IMAGES_DIR, NORMS, OPTIMIZERS, RESULTS_DIR, STUDY_L1, STUDY_VARIANTS, VARIANTS, WIDTHS,
                    Config, default_data_dir, run_name)

STUDY_DIR = "runs/study"  # --norm all trains into a fresh folder; --results results adds to the committed study
# torch, torchvision and Ray are imported inside the functions that use them, after the flags are checked:
# --help and a bad flag are answered without them, in well under a second



def make_parser():
    d = Config()
    p = argparse.ArgumentParser(description="Batch/Group/Layer Normalization on MNIST.", epilog=PATHS_NOTE,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add = p.add_argument
    add("--norm", default=d.norm, choices=[*NORMS, "all"],
        help="normalization layers; 'all' runs the study: " + ", ".join(VARIANTS[k].label for k in STUDY_VARIANTS))
    add("--variants", nargs="+", default=list(STUDY_VARIANTS), choices=list(VARIANTS),
        help="--norm all: the variants to train (other than the default: results in RESULTS/study_<keys>.json)")
    add("--epochs", type=int, default=d.epochs, help="training epochs")
    add("--batch-size", type=int, default=d.batch_size, help="training batch size")
    add("--lr", type=float, default=d.lr, help="peak learning rate of the one-cycle schedule")
    add("--optimizer", default=d.optimizer, choices=OPTIMIZERS, help="optimizer")
    add("--l1", type=float, default=None,
        help=f"L1 lambda on conv weights; unset: 0 for one run, {STUDY_L1} for BN+L1 in the study")
    add("--gn-groups", type=int, default=d.gn_groups, help="GroupNorm groups for --norm gn")
    add("--bn-batch", type=int, default=d.bn_batch,
        help="BN's normalization batch (ghost BN, as on several devices without SyncBN): with --norm bn or brn, each "
             "slice of K training images is normalized by its own statistics; 0: the whole batch")
    add("--dropout", type=float, default=d.dropout, help="dropout probability")
    add("--degrees", type=float, default=d.degrees, help="max random rotation in degrees")
    add("--shift", type=float, default=d.shift, help="max random shift in pixels")
    add("--seed", type=int, default=d.seed, help="random seed")
    add("--seeds", type=int, nargs="+", default=None, help="several seeds, one run each")
    add("--val-split", type=int, default=d.val_split, help="training images held out as validation")
    add("--train-subset", type=int, default=d.train_subset, help="train on the first N images (0: all)")
    add_data_and_device_flags(p, d.device)
    add("--compile", action="store_true", default=d.compile,
        help="torch.compile the model; the first epoch compiles (on a 2-core CPU it did not pay, see README)")
    add("--out", default="runs", help="folder for run folders (metrics.json, checkpoints, model.pt)")
    add("--results", default=STUDY_DIR,
        help=f"--norm all: folder for study.json and models/ (final weights); '{RESULTS_DIR}' adds to the committed "
             "study")
    add("--images", default=None,
        help=f"--norm all: folder for the study's figures (unset: RESULTS/images; '{IMAGES_DIR}' with --results "
             f"{RESULTS_DIR})")
    add("--resume", metavar="RUN_DIR", default=None, help="continue an interrupted run")
    add("--overwrite", action="store_true", help="replace an existing run folder of the same name")
    add("--no-progress", action="store_true", help="no progress bar, only one line per epoch")
    add("--dry-run", action="store_true", help="smoke test: 1 epoch on 1,000 training images")
    add_engine_flags(p)
    return p


def given_flags(parser, argv, args):
    """Names of the options that `argv` sets explicitly."""
    unset = object()
    probe = parser.parse_args(argv, namespace=argparse.Namespace(**{k: unset for k in vars(args)}))
    return {name for name, value in vars(probe).items() if value is not unset}


def check_args(parser, args):
    """parser.error (exit 2, nothing written) for values no run can use."""
    rules = [(args.epochs >= 1, "--epochs must be >= 1"),
             (args.batch_size >= 1, "--batch-size must be >= 1"),
             (args.lr > 0, "--lr must be > 0"),
             (args.l1 is None or args.l1 >= 0, "--l1 must be >= 0"),
             (args.gn_groups >= 1 and all(w % args.gn_groups == 0 for w in WIDTHS),
              f"--gn-groups must divide every layer width {WIDTHS}, e.g. 1, 2 or 4"),
             (0 <= args.dropout < 1, "--dropout must be in [0, 1)"),
             (args.bn_batch >= 0, "--bn-batch must be >= 0"),
             (args.bn_batch == 0 or args.batch_size % args.bn_batch == 0, "--bn-batch must divide --batch-size"),
             (args.bn_batch == 0 or args.norm in BN_BATCH_NORMS, "--bn-batch is only for --norm bn or brn"),
             (args.val_split >= 0 and args.train_subset >= 0,
              "--val-split and --train-subset must be >= 0")]
    for ok, message in rules:
        if not ok:
            parser.error(message)


def config_from_args(args):
    names = {f.name for f in fields(Config)}
    values = {k: v for k, v in vars(args).items() if k in names and v is not None}
    config = Config(**{**values, "data_dir": args.data_dir or default_data_dir()})
    if args.dry_run:
        config = replace(config, epochs=1, train_subset=1000)
    return config


def resume_config(parser, args, given):
    """(stored config, finished epochs) of --resume RUN_DIR, its files checked; refuse contradicting flags.

    A flag contradicts the run when it sets a field of the run's identity (config.IDENTITY) to another
    value; --device and --data-dir say where the run continues and may differ.
    """
    from run_folder import read_run_folder
    if not (Path(args.resume) / "metrics.json").exists() and not (Path(args.resume) / "checkpoint.pt").exists():
        parser.error(f"--resume {args.resume}: no metrics.json there, so nothing to resume")
    if args.norm == "all" or args.seeds:
        parser.error("--resume continues one run; it cannot be combined with --norm all or --seeds")
    stored, _ = read_run_folder(args.resume)  # RunFolderError: damaged or mismatched files
    config = Config(**stored["config"])
    wanted = config_from_args(args)
    clashes = [f"--{k.replace('_', '-')} {getattr(wanted, k)} (run has {getattr(config, k)})"
               for k in sorted(given & set(IDENTITY)) if getattr(wanted, k) != getattr(config, k)]
    if clashes:
        parser.error(f"--resume refuses flags that differ from the run's config: {', '.join(clashes)}")
    where = {"data_dir": args.data_dir or config.data_dir, "device": args.device if "device" in given else config.device}
    return replace(config, **where), len(stored["epochs"])


def check_outputs(args):
    """RunFolderError, before anything is trained or written, for output folders that can't be used."""
    from system import check_output_dir
    folders = [(args.resume or args.out, "--resume" if args.resume else "--out")]
    if args.norm == "all":
        folders += [(args.results, "--results"), (images_dir(args), "--images")]
    for path, flag in folders:
        check_output_dir(path, flag)


def run_one(config, splits, args):
    from system import new_run_dir
    from utils import fit
    run_dir = Path(args.resume) if args.resume else new_run_dir(args.out, run_name(config), args.overwrite)
    print(f"run {run_dir}: {config.norm.upper()} l1={config.l1} seed={config.seed} on {splits['train'][0].device}")
    metrics, _ = fit(config, splits, run_dir, progress=not args.no_progress)
    print(f"final test accuracy {metrics['epochs'][-1]['test_acc']:.2f}% "
          f"({metrics['params']} parameters); wrote {run_dir}/metrics.json and model.pt")


def images_dir(args):
    """--images, else images/ for the committed study and RESULTS/images for any other."""
    if args.images:
        return args.images
    return IMAGES_DIR if Path(args.results).resolve() == Path(RESULTS_DIR).resolve() else str(Path(args.results) / "images")


def command_with(flag, value):
    """This program's command line with `flag` set to `value` (replacing the value it had)."""
    argv, kept = sys.argv[1:], []
    skip = False
    for arg in argv:
        if skip or arg.startswith(f"{flag}="):
            skip = False
            continue
        skip = arg == flag
        if not skip:
            kept.append(arg)
    return shlex.join(["python", "main.py", *kept, flag, value])


def study(config, args):
    """--norm all: the study's runs through the runner, then its figures drawn from the files it wrote. When every
    run is already recorded, it says so first, and leaves the figures as they are."""
    from runner import find_run, load_results, run_command
    from study import results_file, run_study, study_configs, summary_table
    seeds = args.seeds or [config.seed]
    base = replace(config, l1=0.0)  # --l1 sets the lambda of the variants with L1 only
    path = results_file(args.results, args.variants)
    recorded = load_results(path)["runs"]
    trains = any(not find_run(recorded, c) for c in study_configs(base, seeds, args.variants, args.l1))
    if not trains:
        print(f"Nothing to train: every run of this command is already recorded in {path}. To train them anew, "
              f"give a new folder: {command_with('--results', 'runs/study_new')}")
    code = run_command(lambda: run_study(base, seeds, args.results, args.variants, args.l1, engine_from_args(args)),
                       path, config.data_dir, config.device, args.address)
    if code:
        return code
    images = images_dir(args)
    if tuple(args.variants) == STUDY_VARIANTS and (trains or not (Path(images) / "test_accuracy.png").exists()):
        from plots import redraw_study  # matplotlib only where figures are drawn
        for written in redraw_study(args.results, images, config.data_dir):
            print(f"wrote {written}")
    print(summary_table(json.loads(path.read_text())["summary"]))
    return 0


def train(args, config):
    """Load the data and train one run per seed."""
    from data import load_mnist
    from system import keep_freed_memory
    from utils import get_device
    device = get_device(config.device)
    if device.type == "cpu":
        keep_freed_memory()  # process-wide: faster CPU steps, same arithmetic (see system.py)
    splits = load_mnist(config.data_dir, device, config.val_split, config.train_subset)
    for seed in args.seeds or [config.seed]:
        run_one(replace(config, seed=seed), splits, args)


def error_message(error):
    """(exit code, what to print) for an error that ends the program without a traceback."""
    from system import WriteError
    from utils import Interrupted, NonFiniteLoss, WriteFailed
    resume = f"python main.py --resume {getattr(error, 'run_dir', '')}"
    if isinstance(error, NonFiniteLoss):
        return 3, (f"error: training stopped: non-finite loss in {error}. The learning rate (--lr) or the L1 "
                   f"lambda (--l1) is likely too large; lower it and start again. The metrics and checkpoint "
                   f"of every good epoch are kept in {error.run_dir}.")
    if isinstance(error, Interrupted):
        return 130, (f"\ninterrupted in {error}; every finished epoch is saved in {error.run_dir}. "
                     f"Resume with: {resume}")
    if isinstance(error, WriteFailed):
        return 4, (f"error: {error}. Every finished epoch before it is kept in {error.run_dir}. Make room "
                   f"(or fix the folder's permissions), then continue with: {resume}")
    return (4 if isinstance(error, WriteError) else 1), f"error: {error}"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = make_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    check_engine_args(parser, args)
    from data import DataError
    from system import RunFolderError, WriteError
    from utils import Interrupted, NonFiniteLoss, WriteFailed, get_device
    try:
        if args.resume:
            config, done = resume_config(parser, args, given_flags(parser, argv, args))
            if done >= config.epochs:
                print(f"{args.resume} already finished all {config.epochs} epochs; nothing to resume.")
                return 0
        else:
            config = config_from_args(args)
        try:
            if not (args.norm == "all" and args.address):  # on a cluster the nodes' devices count, not this one's
                get_device(config.device)
        except ValueError as error:
            parser.error(str(error))
        check_outputs(args)
        if args.norm == "all":
            return study(config, args)
        train(args, config)
    except (DataError, RunFolderError, WriteError, NonFiniteLoss, Interrupted, WriteFailed) as error:
        code, message = error_message(error)
        print(message, file=sys.stderr)
        return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
