"""What main.py does besides training one run: --resume's checks, the study (--norm all) with its figures, and the
words for an error that ends the program. Kept here so that main.py reads in one screen."""
import argparse
import json
import shlex
import sys
from dataclasses import replace
from pathlib import Path

from lab.runner import run_command
from lab.study import redraw, results_file, run_study, study_configs, summary_table
from lab.train import WriteFailed
from plumbing.cli import engine_from_args
from plumbing.config import IDENTITY, IMAGES_DIR, RESULTS_DIR, STUDY_VARIANTS, config_from_record
from plumbing.data import DataError
from plumbing.results import find_run, load_results
from plumbing.run_folder import read_run_folder
from plumbing.system import RunFolderError, WriteError, check_output_dir
from utils import Interrupted, NonFiniteLoss


def given_flags(parser, argv, args):
    """Names of the options that `argv` sets explicitly."""
    unset = object()
    probe = parser.parse_args(argv, namespace=argparse.Namespace(**{k: unset for k in vars(args)}))
    return {name for name, value in vars(probe).items() if value is not unset}


def resume_config(parser, args, given, wanted):
    """(stored config, finished epochs) of --resume RUN_DIR, its files checked; refuse contradicting flags.

    `wanted`: the config the flags ask for. A flag contradicts the run when it sets a field of the run's identity
    (config.IDENTITY) to another value; --device and --data-dir say where the run continues and may differ.
    """
    if not (Path(args.resume) / "metrics.json").exists() and not (Path(args.resume) / "checkpoint.pt").exists():
        parser.error(f"--resume {args.resume}: no metrics.json there, so nothing to resume")
    if args.norm == "all" or args.seeds:
        parser.error("--resume continues one run; it cannot be combined with --norm all or --seeds")
    stored, _ = read_run_folder(args.resume)  # RunFolderError: damaged or mismatched files
    config = config_from_record(stored["config"])
    clashes = [f"--{k.replace('_', '-')} {getattr(wanted, k)} (run has {getattr(config, k)})"
               for k in sorted(given & set(IDENTITY)) if getattr(wanted, k) != getattr(config, k)]
    if clashes:
        parser.error(f"--resume refuses flags that differ from the run's config: {', '.join(clashes)}")
    where = {"data_dir": args.data_dir or config.data_dir, "device": args.device if "device" in given else config.device}
    return replace(config, **where), len(stored["epochs"])


def check_outputs(args):
    """RunFolderError, before anything is trained or written, for output folders that can't be used."""
    folders = [(args.resume or args.out, "--resume" if args.resume else "--out")]
    if args.norm == "all":
        folders += [(args.results, "--results"), (images_dir(args), "--images")]
    for path, flag in folders:
        check_output_dir(path, flag)


def images_dir(args):
    """--images, else images/ for the committed study and RESULTS/images for any other."""
    if args.images:
        return args.images
    committed = Path(args.results).resolve() == Path(RESULTS_DIR).resolve()
    return IMAGES_DIR if committed else str(Path(args.results) / "images")


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


def study_command(config, args):
    """--norm all: the study's runs through the runner, then its figures drawn from the files it wrote. When every
    run is already recorded, it says so first, and leaves the figures as they are."""
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
        for written in redraw(args.results, images, config.data_dir):
            print(f"wrote {written}")
    print(summary_table(json.loads(path.read_text())["summary"]))
    return 0


STOPS = (DataError, RunFolderError, WriteError, NonFiniteLoss, Interrupted, WriteFailed)  # end with a message, no trace


def error_message(error):
    """(exit code, what to print) for an error that ends the program without a traceback."""
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
