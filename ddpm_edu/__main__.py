"""`python -m ddpm_edu ...`: see ddpm_edu.cli."""

import sys

from ddpm_edu.cli import main

if __name__ == "__main__":
    sys.exit(main())
