"""CRN's class-wise best-of-k perceptual loss (the paper's "diversity loss"): the per-class
minimum over ``k`` outputs of class-masked feature distances (Chen & Koltun, ICCV 2017, Sec. 3.4, "Synthesizing a diverse collection"; official
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

__all__ = ["class_masked_distance", "min_over_outputs"]


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
    dist = (fake.float() - real[:, None].float()).abs().mean(2)                    # (B, k, h, w)
    return torch.einsum("bkhw,bchw->bkc", dist, masks.float()) / (dist.shape[-2] * dist.shape[-1])


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
