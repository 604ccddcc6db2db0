"""``python -m semsynth ...``: the ``semsynth`` command (also what ``torchrun -m semsynth`` runs)."""

import sys

from semsynth.cli import main

if __name__ == "__main__":
    sys.exit(main())
