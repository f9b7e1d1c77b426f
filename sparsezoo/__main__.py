"""``python -m sparsezoo …`` (also what ``torchrun -m sparsezoo …`` runs on every process)."""

import sys

from sparsezoo.cli import main

if __name__ == "__main__":
    sys.exit(main())
