"""What every multi-run command line shares, without torch: the engine flags and the note on paths.

Parsers are built from this module and config.py alone, so `--help` and a bad flag are answered before
torch, torchvision or matplotlib are imported.
"""
import os

from config import DATA_DIR_ENV, DEVICES


PATHS_NOTE = "Relative paths (--out, --results, --images, --data-dir) are relative to the working folder."


def add_engine_flags(parser):
    """--workers, --address and --gpus-per-run, the same for every multi-run command."""
    add = parser.add_argument
    add("--workers", type=int, default=os.cpu_count() or 1,
        help="runs at a time, one CPU and one torch thread each (1: in this process, without Ray)")
    add("--address", default=None,
        help="join this Ray cluster instead of starting one ('auto': the one `ray start` started on this machine)")
    add("--gpus-per-run", type=float, default=None,
        help="share of a GPU each run asks Ray for when training on a GPU (unset: 0.25)")


def check_engine_args(parser, args):
    if args.workers < 1:
        parser.error("--workers must be >= 1")
    if args.gpus_per_run is not None and not 0 < args.gpus_per_run <= 1:
        parser.error("--gpus-per-run must be in (0, 1]")


DATA_DIR_HELP = f"MNIST root; unset: ${DATA_DIR_ENV}, else ./data (downloaded there if missing)"


def add_data_and_device_flags(parser, device_default="auto"):
    """--data-dir and --device, spelled once for every command."""
    parser.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    parser.add_argument("--device", default=device_default, choices=DEVICES, help="device")
