"""Label-map utilities: one-hot encoding and colourisation.

Label maps are ``(N, H, W)`` int64 tensors of label ids ``0 .. semantic_nc - 1``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def one_hot(label: torch.Tensor, semantic_nc: int) -> torch.Tensor:
    """One-hot encode a label map (the generator's input, as in SPADE/OASIS).

    Args:
        label: ``(N, H, W)`` int64 label ids in ``[0, semantic_nc)``.
        semantic_nc: number of label ids (don't-care included).

    Returns:
        ``(N, semantic_nc, H, W)`` float32 in ``{0, 1}``, on ``label``'s device.

    Raises:
        ValueError: wrong rank/dtype, or an id outside ``[0, semantic_nc)`` (the message
            gives the offending values).
    """
    if label.dim() != 3 or label.dtype != torch.int64:
        raise ValueError(f"label map must be (N,H,W) int64, got {tuple(label.shape)} {label.dtype}")
    lo, hi = int(label.min()), int(label.max())
    if lo < 0 or hi >= semantic_nc:
        bad = torch.unique(label[(label < 0) | (label >= semantic_nc)]).tolist()[:10]
        raise ValueError(f"label ids {bad} outside [0, {semantic_nc})")
    return F.one_hot(label, semantic_nc).permute(0, 3, 1, 2).to(torch.float32)


def colorize(label: torch.Tensor | np.ndarray, palette) -> np.ndarray:
    """Colour a label map with a palette.

    Args:
        label: ``(H, W)`` or ``(N, H, W)`` integer ids.
        palette: sequence of RGB triples (0-255), one per id.

    Returns:
        uint8 array ``(..., H, W, 3)``.
    """
    lab = label.cpu().numpy() if isinstance(label, torch.Tensor) else np.asarray(label)
    pal = np.asarray(palette, dtype=np.uint8)
    return pal[np.clip(lab, 0, len(pal) - 1)]


def to_uint8_image(image: torch.Tensor) -> np.ndarray:
    """``(3, H, W)`` or ``(N, 3, H, W)`` float in [-1, 1] → uint8 ``(..., H, W, 3)`` (rounded)."""
    x = ((image.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.movedim(-3, -1).cpu().numpy()
