"""Training losses for diversity.

* :func:`diversity_sensitive_loss` — the diversity-sensitive (mode-seeking) term for a
  noise-driven generator (DSGAN, Yang et al., ICLR 2019, eq. 2; the idea of MSGAN, Mao et
  al., CVPR 2019; DP-SIMS, Berrada et al., CVPR 2024, adds a diversity term of this kind).

CRN's best-of-k loss is :mod:`semsynth.losses.best_of_k`.
"""

from __future__ import annotations

import torch

__all__ = ["DISTANCES", "diversity_sensitive_loss", "structure"]

#: Values of ``distance`` in :func:`diversity_sensitive_loss`.
DISTANCES = ("image", "structure")


def structure(x: torch.Tensor, eps: float = 0.05) -> torch.Tensor:
    """What the ``"structure"`` distance compares: the horizontal and vertical differences
    of each image after standardising each of its channels (mean 0, std 1 over the pixels,
    ``eps`` added to the std). A change of brightness or contrast alone leaves it unchanged.

    Args:
        x: ``(B, C, H, W)`` float.

    Returns:
        ``(B, C·((H−1)·W + H·(W−1)))`` float.
    """
    y = (x - x.mean((2, 3), keepdim=True)) / (x.std((2, 3), keepdim=True) + eps)
    return torch.cat([(y[..., 1:, :] - y[..., :-1, :]).flatten(1), (y[..., :, 1:] - y[..., :, :-1]).flatten(1)], 1)


def diversity_sensitive_loss(fake1: torch.Tensor, fake2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor,
                             tau: float, distance: str = "image", reduction: str = "mean") -> torch.Tensor:
    """``−mean_i min(d(G(c_i, z1_i), G(c_i, z2_i)) / mean|z1_i − z2_i|, τ)``.

    Two images of the same label map from two noise draws should differ in proportion to
    the noise's difference; the bound ``τ`` stops the term from rewarding change beyond
    that (DSGAN eq. 2). ``d`` is the mean absolute difference of the images
    (``"image"``, DSGAN's) or of their :func:`structure` (``"structure"``: blind to global
    brightness and contrast, which an image-space ``d`` rewards as much as a new scene).
    Minimised by G.

    Args:
        fake1, fake2: ``(B, 3, H, W)`` float images of the same label maps.
        z1, z2: ``(B, z_dim)`` or ``(B, z_dim, H', W')`` float noise that made them.
        tau: the bound on the distance ratio (> 0).
        distance: ``"image"`` or ``"structure"``.
        reduction: ``"mean"`` over the pairs, or ``"none"``.

    Returns:
        Scalar in ``[−τ, 0]`` (``"mean"``), or ``(B,)`` per pair (``"none"``).

    Raises:
        ValueError: batch sizes disagree, ``τ`` ≤ 0, or an unknown ``distance``.
    """
    if distance not in DISTANCES:
        raise ValueError(f"diversity_sensitive_loss: distance {distance!r} is not one of {list(DISTANCES)}")
    if fake1.shape != fake2.shape or z1.shape != z2.shape or fake1.shape[0] != z1.shape[0]:
        raise ValueError(f"diversity_sensitive_loss: shapes disagree: images {tuple(fake1.shape)}, "
                         f"{tuple(fake2.shape)}, noise {tuple(z1.shape)}, {tuple(z2.shape)}")
    if tau <= 0:
        raise ValueError(f"diversity_sensitive_loss: tau {tau} must be > 0")
    fake1, fake2 = fake1.float(), fake2.float()
    if distance == "structure":
        fake1, fake2 = structure(fake1), structure(fake2)
    d_img = (fake1 - fake2).abs().flatten(1).mean(1)
    d_z = (z1 - z2).abs().flatten(1).mean(1).clamp_min(1e-8)
    per_pair = -(d_img / d_z).clamp(max=tau)
    return per_pair if reduction == "none" else per_pair.mean()
