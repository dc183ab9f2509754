"""Speed, one job per command: the data pipelines, what each norm costs, and the runner's speed-up.

    python bench.py pipelines --device cpu --data-dir DIR                        # full measurement
    python bench.py pipelines --quick --device cpu --data-dir DIR                # about a minute on 2 cores
    python bench.py pipelines --lever channels_last --device cpu --data-dir DIR  # try one speed lever
    python bench.py norms --device cpu        # every norm at every batch size; inference with BN folded
    python bench.py workers --data-dir DIR    # short study runs with the runner at --workers 1 and 2
    python bench.py command --data-dir DIR    # python main.py --norm all from a cold start, --workers 1 and 2
    python bench.py notebook --data-dir DIR   # Run all of the notebook, its defaults, in a fresh clone

Each job is a module of this package, lab/bench/<job>.py, whose docstring says what it measures and which
results file it writes; timing.py holds what they share (round_robin, the timer, the machine, the writing of
a results file). This module is the command line: it imports no torch, so --help and a bad flag are answered
at once, and the job's module (torch and all) is imported only once the flags are parsed.
"""
import argparse
import importlib
from pathlib import Path

from plumbing.cli import DATA_DIR_HELP
from plumbing.config import NORMS, RESULTS_DIR, Config, default_data_dir

JOBS = ("pipelines", "norms", "workers", "command", "notebook")
LEVERS = ("none", "channels_last", "compile", "one_thread", "bf16")
DEVICE_HELP = "cpu | cuda (unset: cuda where torch finds one, else cpu)"
REPO = str(Path(__file__).resolve().parents[2])


def make_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    jobs = p.add_subparsers(dest="job", required=True, metavar="{" + ",".join(JOBS) + "}")

    def job(name, help, rounds):
        sub = jobs.add_parser(name, help=help, description=help, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        sub.add_argument("--rounds", type=int, default=rounds, help="rounds; each times every contender once")
        sub.add_argument("--results", default=RESULTS_DIR,
                         help=f"folder for the JSON (its name: see the top of lab/bench/{name}.py)")
        return sub.add_argument

    add = job("pipelines", "ours, the bare model step and the classic DataLoader, side by side", 10)
    add("--device", default=None, help=DEVICE_HELP)
    add("--data-dir", default=default_data_dir(), help=DATA_DIR_HELP)
    add("--batch-size", type=int, default=Config().batch_size, help="training batch size of every pipeline")
    add("--steps", type=int, default=200, help="timed training steps per pipeline and round")
    add("--warmup", type=int, default=20, help="untimed training steps first")
    add("--classic-workers", type=int, default=None, help="DataLoader workers (unset: 2 on CUDA, 0 on CPU)")
    add("--lever", choices=LEVERS, default="none", help="speed setting applied to ours and model")
    add("--norm", choices=NORMS, default="bn", help="normalization of the model")
    add("--malloc", choices=("keep", "default"), default="keep",
        help="CPU: keep: this repo's allocator setting for every pipeline; default: glibc's")
    add("--quick", action="store_true", help="fewer steps and rounds (about a minute on 2 cores)")

    add = job("norms", "BN, BRN, GN, GN+WS, LN, FRN and EvoNorm-S0 at every batch size of config.BATCH_SIZES; "
                       "inference with BN folded", 3)
    add("--device", default=None, help=DEVICE_HELP)
    add("--cost-images", type=int, default=1024, help="images per timed block of the training costs")
    add("--inference-rounds", type=int, default=10, help="rounds of the inference timing")
    add("--inference-images", type=int, default=2048, help="images per timed block of the inference timing")
    add("--malloc", choices=("keep", "default"), default="keep",
        help="CPU: keep: this repo's allocator setting; default: glibc's")

    add = job("workers", "short study runs with the runner at --workers 1 and 2, alternating rounds", 3)
    add("--data-dir", default=default_data_dir(), help=DATA_DIR_HELP)

    add = job("command", "python main.py --norm all from a cold start at --workers 1 and 2, alternating rounds", 1)
    add("--data-dir", default=default_data_dir(), help=DATA_DIR_HELP)
    add("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the study's runs")
    add("--epochs", type=int, default=1, help="epochs of every run")
    add("--train-subset", type=int, default=20_000, help="training images of every run (0: all)")
    add("--repo", default=REPO, help="the checkout whose main.py is timed")
    add("--label", default="", help="appended to the file name (e.g. 'before' for another --repo)")

    add = job("notebook", "Run all of the notebook with its defaults in a fresh clone, timed", 1)
    add("--data-dir", default=default_data_dir(), help=DATA_DIR_HELP)
    add("--repo", default=REPO, help="the checkout whose HEAD is cloned")
    add("--output", default=None, help="where to keep the executed notebook (unset: not kept)")
    return p


def parse_args(argv=None):
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    if args.job == "pipelines" and args.quick:
        args.steps, args.rounds, args.warmup = 60, 6, 5
    return args


def main(argv=None):
    """Parse the flags, then import the job's module (torch with it) and run it."""
    args = parse_args(argv)
    importlib.import_module(f"lab.bench.{args.job}").run(args)
