"""What every multi-run command line shares, without torch: the engine flags and the note on paths.

Parsers are built from this module and config.py alone, so `--help` and a bad flag are answered before
torch, torchvision or matplotlib are imported.
"""
import importlib.util
import os

from plumbing.config import DATA_DIR_ENV, DEVICES, EXPERIMENT_EPOCHS, EXPERIMENT_SEEDS, IMAGES_DIR, PLAIN, Engine


PATHS_NOTE = "Relative paths (--out, --results, --images, --data-dir) are relative to the working folder."


def add_engine_flags(parser):
    """--workers, --address and --gpus-per-run, the same for every multi-run command."""
    add = parser.add_argument
    add("--workers", type=int, default=os.cpu_count() or 1,
        help="runs at a time on this machine's CPUs, one CPU and one torch thread each (1: in this process; N: N "
             "worker processes). On a GPU the runs train one after another in this process")
    add("--address", default=None,
        help="train on this Ray cluster ('auto': the one `ray start` started on this machine); needs Ray: "
             "pip install -r requirements-cluster.txt")
    add("--gpus-per-run", type=float, default=None,
        help="with --address: the share of a GPU each run asks Ray for when training on a GPU (unset: 0.25)")


def check_engine_args(parser, args):
    if args.workers < 1:
        parser.error("--workers must be >= 1")
    if args.gpus_per_run is not None and not args.address:
        parser.error("--gpus-per-run shares a cluster's GPUs between Ray tasks: it needs --address (on one machine "
                     "the runs on a GPU train one after another)")
    if args.gpus_per_run is not None and not 0 < args.gpus_per_run <= 1:
        parser.error("--gpus-per-run must be in (0, 1]")
    if args.address and importlib.util.find_spec("ray") is None:
        parser.error("--address runs on a Ray cluster, and Ray is not installed here: "
                     "pip install -r requirements-cluster.txt")


DATA_DIR_HELP = f"MNIST root; unset: ${DATA_DIR_ENV}, else ./data (downloaded there if missing)"


def add_data_and_device_flags(parser, device_default="auto"):
    """--data-dir and --device, spelled once for every command."""
    parser.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    parser.add_argument("--device", default=device_default, choices=DEVICES, help="device")


NORMS_HELP = "normalizations (gn2: GN with 2 groups; in: InstanceNorm; none: no normalization)"


def add_experiment_flags(parser, norms, out, results, results_help, figure, epochs_help="epochs of every run"):
    """The flags of an experiment's command line (sweep.py, lr_range.py): which norms, seeds and epochs,
    where the data, runs, results and figure go, and the engine flags."""
    add = parser.add_argument
    add("--norms", nargs="+", default=list(norms), choices=PLAIN, help=NORMS_HELP)
    add("--seeds", type=int, nargs="+", default=list(EXPERIMENT_SEEDS), help="seeds, one run each")
    add("--epochs", type=int, default=EXPERIMENT_EPOCHS, help=epochs_help)
    add_data_and_device_flags(parser)
    add("--out", default=out, help="folder for the run folders")
    add("--results", default=results, help=results_help)
    add("--images", default=IMAGES_DIR, help=f"folder for the figure {figure}")
    add_engine_flags(parser)


def check_experiment_args(parser, args):
    if args.epochs < 1:
        parser.error("--epochs must be >= 1")
    check_engine_args(parser, args)


def engine_from_args(args):
    """The Engine the flags ask for (--out, --workers, --address, --gpus-per-run)."""
    return Engine(str(args.out), args.workers, args.address, args.gpus_per_run)
