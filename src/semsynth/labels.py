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


def edge_map(ids: torch.Tensor) -> torch.Tensor:
    """The instance-edge map of an instance-id map (SPADE Sec. 3 / appendix; NVlabs/SPADE and
    xh-liu/CC-FPSE ``models/pix2pix_model.py``, ``get_edges``): a pixel is an edge when its
    id differs from its right, left, lower or upper neighbour (both pixels of a differing
    pair are marked; no wrap-around).

    Args:
        ids: ``(N, H, W)`` integer ids (instance ids; or label ids, where a label map has no
            instance map: then each class region counts as one instance).

    Returns:
        ``(N, 1, H, W)`` float32 in ``{0, 1}``, on ``ids``' device.

    Raises:
        ValueError: not ``(N, H, W)`` or not an integer dtype.
    """
    if ids.dim() != 3 or ids.is_floating_point() or ids.is_complex():
        raise ValueError(f"edge_map: ids must be (N,H,W) integers, got {tuple(ids.shape)} {ids.dtype}")
    edge = torch.zeros(ids.shape, dtype=torch.bool, device=ids.device)
    dx = ids[:, :, 1:] != ids[:, :, :-1]
    dy = ids[:, 1:, :] != ids[:, :-1, :]
    edge[:, :, 1:] |= dx
    edge[:, :, :-1] |= dx
    edge[:, 1:, :] |= dy
    edge[:, :-1, :] |= dy
    return edge.unsqueeze(1).to(torch.float32)


def label_input(label: torch.Tensor, info, edges: torch.Tensor | None = None) -> torch.Tensor:
    """The generator's (and a conditional D's) label input: the one-hot label map, and with
    ``info.instance_edges`` the edge map as one more, last channel (the official order:
    ``cat(one-hot, edges)``).

    Args:
        label: ``(N, H, W)`` int64 label ids.
        info: the :class:`semsynth.types.DatasetInfo`.
        edges: ``(N, 1, H, W)`` or ``(N, H, W)`` float {0, 1} edges of the instance maps;
            ``None`` with ``instance_edges``: the label map's class boundaries
            (:func:`edge_map` of the label ids; a painted map has no instances). Ignored
            without ``instance_edges``.

    Returns:
        ``(N, info.input_nc, H, W)`` float32.

    Raises:
        ValueError: as :func:`one_hot`; edges of another size than the label map.
    """
    onehot = one_hot(label, info.semantic_nc)
    if not info.instance_edges:
        return onehot
    if edges is None:
        edges = edge_map(label)
    if edges.dim() == 3:
        edges = edges.unsqueeze(1)
    n, _, h, w = onehot.shape
    if tuple(edges.shape) != (n, 1, h, w):
        raise ValueError(f"instance-edge map {tuple(edges.shape)} does not fit the label map {(n, 1, h, w)}")
    return torch.cat([onehot, edges.to(onehot.device, onehot.dtype)], 1)


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
