"""Speed, one job per command (python bench.py --help lists the jobs)."""
import sys

from lab.bench import main

if __name__ == "__main__":
    sys.exit(main())
