"""Writing images: the one place that turns uint8 arrays into PNG files.

Used by training grids, ``semsynth sample``, evaluation outputs and the web editor. Files
are written atomically (temp file in the same folder, then rename), so a crash never leaves
a partial PNG.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from semsynth.fileio import atomic_write_bytes

__all__ = ["png_bytes", "save_png"]


def png_bytes(array: np.ndarray) -> bytes:
    """Encode an image as PNG bytes (PIL, lossless).

    Args:
        array: ``(H, W, 3)`` uint8 RGB, or ``(H, W)`` uint8 (grey / label ids 0-255).

    Returns:
        The PNG file's bytes.

    Raises:
        ValueError: another dtype or shape (names both).
    """
    from PIL import Image

    arr = np.asarray(array)
    if arr.dtype != np.uint8 or not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        raise ValueError(f"PNG needs (H, W, 3) or (H, W) uint8, got {arr.shape} {arr.dtype}")
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def save_png(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write ``array`` (see :func:`png_bytes`) to ``path`` atomically; parents are created.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    atomic_write_bytes(path, png_bytes(array))
    return path
