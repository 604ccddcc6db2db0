"""Training losses for diversity.

* :func:`diversity_sensitive_loss` — the diversity-sensitive (mode-seeking) term for a
  noise-driven generator (DSGAN, Yang et al., ICLR 2019, eq. 2; the idea of MSGAN, Mao et
  al., CVPR 2019; DP-SIMS, Berrada et al., CVPR 2024, adds a diversity term of this kind).
* :func:`class_masked_distance` / :func:`min_over_outputs` — CRN's diversity loss (below).

CRN's diversity loss: per-class minimum over ``k`` outputs of class-masked feature
distances (Chen & Koltun, ICCV 2017, Sec. 3.4, "Synthesizing a diverse collection"; official
CQFIO/PhotographicImageSynthesis ``demo_256p.py``, ``compute_error`` and ``G_loss``).

For feature maps ``Φ_l`` (the image itself and VGG layers) of the real image ``I`` and of the
``u``-th output ``g_u``, and the label map's class masks ``M_c`` resized to each layer:

    L_c(u) = Σ_l λ_l · mean_x( M_c^l(x) · mean_ch |Φ_l(I)(x) − Φ_l(g_u)(x)| )
    L = Σ_c [ (1 − ε) · min_u L_c(u) + ε · mean_u L_c(u) ]

The mean over pixels ``x`` is over the whole map (not the class area), so large classes weigh
more; ``ε = 0.001`` in the official code keeps every output learning a little. With ``k = 1``
this is the plain perceptual regression loss (Sec. 3.3). Batches average ``L`` over images.
"""

from __future__ import annotations

import torch

__all__ = ["class_masked_distance", "diversity_sensitive_loss", "min_over_outputs"]


def diversity_sensitive_loss(fake1: torch.Tensor, fake2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor,
                             tau: float) -> torch.Tensor:
    """``−mean_i min(mean|G(c_i, z1_i) − G(c_i, z2_i)| / mean|z1_i − z2_i|, τ)``.

    Two images of the same label map from two noise draws should differ in proportion to
    the noise's difference; the bound ``τ`` stops the term from rewarding change beyond
    that (DSGAN eq. 2, L1 in image space). Minimised by G.

    Args:
        fake1, fake2: ``(B, 3, H, W)`` float images of the same label maps.
        z1, z2: ``(B, z_dim)`` or ``(B, z_dim, H', W')`` float noise that made them.
        tau: the bound on the distance ratio (> 0).

    Returns:
        Scalar in ``[−τ, 0]``.

    Raises:
        ValueError: batch sizes disagree, or ``τ`` ≤ 0.
    """
    if fake1.shape != fake2.shape or z1.shape != z2.shape or fake1.shape[0] != z1.shape[0]:
        raise ValueError(f"diversity_sensitive_loss: shapes disagree: images {tuple(fake1.shape)}, "
                         f"{tuple(fake2.shape)}, noise {tuple(z1.shape)}, {tuple(z2.shape)}")
    if tau <= 0:
        raise ValueError(f"diversity_sensitive_loss: tau {tau} must be > 0")
    d_img = (fake1 - fake2).abs().flatten(1).mean(1)
    d_z = (z1 - z2).abs().flatten(1).mean(1).clamp_min(1e-8)
    return -(d_img / d_z).clamp(max=tau).mean()


def class_masked_distance(fake: torch.Tensor, real: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Per-class masked mean absolute distance of one feature layer.

    Args:
        fake: ``(B, k, ch, h, w)`` features of the ``k`` outputs of each image.
        real: ``(B, ch, h, w)`` features of the real images (broadcast over ``k``).
        masks: ``(B, C, h, w)`` float class masks in [0, 1] at the layer's size.

    Returns:
        ``(B, k, C)``: ``mean_x(masks[b, c] · mean_ch |fake[b, u] − real[b]|)``.

    Raises:
        ValueError: mismatched batch or spatial sizes.
    """
    if fake.dim() != 5 or real.dim() != 4 or masks.dim() != 4:
        raise ValueError(f"class_masked_distance: fake (B,k,ch,h,w), real (B,ch,h,w), masks (B,C,h,w); got "
                         f"{tuple(fake.shape)}, {tuple(real.shape)}, {tuple(masks.shape)}")
    if fake.shape[0] != real.shape[0] or fake.shape[2:] != real.shape[1:] or masks.shape[-2:] != real.shape[-2:] \
            or masks.shape[0] != real.shape[0]:
        raise ValueError(f"class_masked_distance: shapes disagree: fake {tuple(fake.shape)}, real "
                         f"{tuple(real.shape)}, masks {tuple(masks.shape)}")
    dist = (fake - real[:, None]).abs().mean(2)                     # (B, k, h, w)
    return torch.einsum("bkhw,bchw->bkc", dist, masks) / (dist.shape[-2] * dist.shape[-1])


def min_over_outputs(per_class: torch.Tensor, mean_weight: float = 0.001) -> torch.Tensor:
    """CRN's aggregate: ``Σ_c [(1 − ε) min_u + ε mean_u]``, averaged over the batch.

    Args:
        per_class: ``(B, k, C)`` summed layer distances ``L_c(u)`` (≥ 0).
        mean_weight: ``ε`` (official 0.001).

    Returns:
        Scalar.
    """
    if per_class.dim() != 3:
        raise ValueError(f"min_over_outputs: expected (B, k, C), got {tuple(per_class.shape)}")
    best = per_class.min(dim=1).values.sum(-1)
    avg = per_class.mean(dim=1).sum(-1)
    return ((1 - mean_weight) * best + mean_weight * avg).mean()
