"""Write the README's and the docs' generated blocks from results/ (python report.py --write)."""
import sys

from lab.report import main

if __name__ == "__main__":
    sys.exit(main())
