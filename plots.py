"""Redraw every figure from the committed results, without training: python plots.py [--results R] [--out O]."""
import argparse
import sys

from plumbing.cli import DATA_DIR_HELP
from plumbing.config import IMAGES_DIR, RESULTS_DIR, default_data_dir


def main(argv=None):
    p = argparse.ArgumentParser(description="Redraw every figure from committed result files.",
                                epilog="Relative paths are relative to the working folder.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--results", default=RESULTS_DIR, help="folder with study.json, models/ and the other results")
    p.add_argument("--out", default=IMAGES_DIR, help="folder the PNG files are written to")
    p.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    args = p.parse_args(argv)
    from lab.experiments import redraw  # torch and matplotlib after the flags
    from plumbing.data import DataError
    from plumbing.system import WriteError
    try:
        paths = redraw(args.results, args.out, args.data_dir or default_data_dir())
    except (OSError, DataError, WriteError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for path in paths:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
