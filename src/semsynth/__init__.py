"""semsynth: semantic image synthesis (label map → photo), OASIS and the systems it is
measured against, on one training and evaluation protocol.

Importing semsynth sets ``MKL_CBWR=COMPATIBLE`` in the environment unless it is already set:
without it, Intel MKL (PyTorch's CPU BLAS) picks code paths by memory alignment, so the same
CPU training step can differ in the last bits between two processes, and a run resumed in a
new process would not be bit-identical to an uninterrupted one. Measured cost here: none
within noise (the convolutions run in oneDNN, not MKL). It takes effect only if MKL has not
been used yet in the process (import semsynth before running any torch computation); set
``MKL_CBWR`` yourself to choose otherwise.
"""

import os as _os

_os.environ.setdefault("MKL_CBWR", "COMPATIBLE")

__version__ = "0.1.0"
