"""Resolution chains of coarse-to-fine generators (SPADE, CC-FPSE, CRN).

The official generators double the resolution between stages and assume the output size is
divisible by ``2^k``. CamVid's 72×96 is not: the chain is built backwards from the output by
halving with ceiling, so each stage's size is reached from the previous one by a resize of
factor ≈ 2 (exactly ×2 whenever the output size is divisible by ``2^k``, which reproduces the
official schedule).
"""

from __future__ import annotations

from typing import Mapping

import torch

from semsynth.types import ConfigError

__all__ = ["size_chain", "check_label_input", "upsampling_stages"]


def size_chain(size: int, doublings: int) -> list[int]:
    """Sizes from coarsest to finest, ``doublings + 1`` of them, ending at ``size``.

    Example: ``size_chain(72, 5) == [3, 5, 9, 18, 36, 72]``; ``size_chain(256, 6) ==
    [4, 8, 16, 32, 64, 128, 256]``.

    Raises:
        ValueError: ``size < 1`` or ``doublings < 0``.
    """
    if size < 1 or doublings < 0:
        raise ValueError(f"size_chain: size {size} must be >= 1 and doublings {doublings} >= 0")
    chain = [size]
    for _ in range(doublings):
        chain.append(-(-chain[-1] // 2))
    return chain[::-1]


def check_label_input(label_onehot: torch.Tensor, semantic_nc: int, height: int, width: int) -> tuple[int, int, int, int]:
    """Check a generator's one-hot input against the size it was built for.

    Args:
        label_onehot: ``(N, C, H, W)``.
        semantic_nc, height, width: what the generator expects.

    Returns:
        ``(N, C, H, W)``.

    Raises:
        ValueError: other channels or another size (both named).
    """
    n, c, h, w = label_onehot.shape
    if c != semantic_nc:
        raise ValueError(f"label map has {c} one-hot channels, generator expects {semantic_nc}")
    if (h, w) != (height, width):
        raise ValueError(f"label map is {h}x{w}, generator was built for {height}x{width}")
    return n, c, h, w


def upsampling_stages(mode: str, table: Mapping[str, int], key: str = "model.generator.num_upsampling_layers") -> int:
    """The number of ×2 stages of a SPADE-style ``num_upsampling_layers`` mode.

    Raises:
        ConfigError: a mode not in ``table`` (names ``key`` and the known modes).
    """
    if mode not in table:
        raise ConfigError(f"{key}: {mode!r} is not one of {list(table)}")
    return table[mode]
