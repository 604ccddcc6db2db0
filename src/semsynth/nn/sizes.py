"""Resolution chains of coarse-to-fine generators (SPADE, CC-FPSE, CRN).

The official generators double the resolution between stages and assume the output size is
divisible by ``2^k``. CamVid's 72×96 is not: the chain is built backwards from the output by
halving with ceiling, so each stage's size is reached from the previous one by a resize of
factor ≈ 2 (exactly ×2 whenever the output size is divisible by ``2^k``, which reproduces the
official schedule).
"""

from __future__ import annotations

__all__ = ["size_chain"]


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
