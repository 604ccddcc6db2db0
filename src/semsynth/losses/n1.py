"""OASIS losses: class-balanced N+1 cross-entropy and LabelMix.

Schönfeld et al., ICLR 2021, Eq. (1)-(4) and the official ``losses.py``:

* Class balancing: for the K label ids present in the batch (don't-care excluded),
  ``w_c = (B·H·W) / (K · n_c)`` where ``n_c`` is the pixel count of id ``c`` over the whole
  batch; the don't-care id gets weight 0. Weights are computed over the whole batch given
  to the loss, never per device split.
* D loss: ``weighted CE(D(real) → 1 + label) + CE(D(fake) → 0) + λ_LM · LabelMix``; the CE
  terms are means over all pixels (weighted per pixel for the real term).
* G loss: ``weighted CE(D(G(z, t)) → 1 + label)``.
* LabelMix (Eq. 4): mask M with one random bit per label id — shared by the whole batch
  (``per="batch"``: what the official ``generate_labelmix`` intends, one ``randint(0, 2)``
  per class of ``torch.unique`` over the batch; its in-place loop also lets the bit of
  class 1 overwrite class-0 pixels whose bit was 1, a side effect not reproduced here) or drawn per image (``per="image"``); the mix
  ``M·real + (1-M)·fake`` is scored by D and compared (mean squared error) with
  ``M·D(real) + (1-M)·D(fake)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def class_balance_weights(label: torch.Tensor, semantic_nc: int, ignore_index: int | None) -> torch.Tensor:
    """Per-pixel class-balancing weights.

    Args:
        label: ``(B, H, W)`` int64 label ids.
        semantic_nc: number of label ids.
        ignore_index: don't-care id (weight 0), or ``None``.

    Returns:
        ``(B, H, W)`` float32: ``B·H·W / (K · n_c)`` at pixels of id ``c``, 0 at don't-care.
    """
    counts = torch.bincount(label.reshape(-1), minlength=semantic_nc).to(torch.float32)
    if ignore_index is not None:
        counts[ignore_index] = 0
    present = counts > 0
    k = present.sum().clamp(min=1).to(torch.float32)
    coeff = torch.where(present, label.numel() / (k * counts.clamp(min=1)), torch.zeros_like(counts))
    return coeff[label]


def n1_cross_entropy(logits: torch.Tensor, label: torch.Tensor, for_real: bool,
                     ignore_index: int | None) -> torch.Tensor:
    """The OASIS (N+1)-class cross-entropy.

    Args:
        logits: ``(B, semantic_nc + 1, H, W)`` discriminator output (channel 0 = fake).
        label: ``(B, H, W)`` int64 label ids.
        for_real: True → target ``1 + label`` with class-balancing weights (real images, and
            the generator's adversarial loss); False → target 0 ("fake") everywhere, no
            weights.
        ignore_index: don't-care id (weight 0 in the real term).

    Returns:
        Scalar: mean over all ``B·H·W`` pixels.
    """
    if for_real:
        target = label + 1
        per_pixel = F.cross_entropy(logits, target, reduction="none")
        weights = class_balance_weights(label, logits.shape[1] - 1, ignore_index)
        return (per_pixel * weights).mean()
    target = torch.zeros_like(label)
    return F.cross_entropy(logits, target)


LABELMIX_MASKS = ("batch", "image")


def labelmix_mask(label: torch.Tensor, generator: torch.Generator | None = None,
                  per: str = "image") -> torch.Tensor:
    """LabelMix mask: one random bit per label id, per batch or per image.

    Args:
        label: ``(B, H, W)`` int64 label ids.
        generator: RNG for the bits (CPU generator; the training loop owns it).
        per: ``"batch"`` — one bit per id shared by all images (the intent of the official
            OASIS ``generate_labelmix``); ``"image"`` — an independent bit per (image, id).

    Returns:
        ``(B, 1, H, W)`` float32 in {0, 1}; every pixel of one id in one image (in the whole
        batch, with ``per="batch"``) shares its bit.

    Raises:
        ValueError: ``per`` not in ``("batch", "image")``.
    """
    if per not in LABELMIX_MASKS:
        raise ValueError(f"labelmix mask granularity must be one of {LABELMIX_MASKS}, got {per!r}")
    b = label.shape[0]
    nc = int(label.max()) + 1
    rows = 1 if per == "batch" else b
    bits = torch.randint(0, 2, (rows, nc), generator=generator).to(label.device, torch.float32)
    bits = bits.expand(b, nc)
    mask = torch.gather(bits, 1, label.reshape(b, -1)).reshape(label.shape)
    return mask[:, None]


def labelmix_loss(d_mixed: torch.Tensor, d_real: torch.Tensor, d_fake: torch.Tensor,
                  mask: torch.Tensor) -> torch.Tensor:
    """LabelMix consistency (OASIS Eq. 4): ``mean((D(mix) − (M·D(real) + (1−M)·D(fake)))²)``.

    Args:
        d_mixed, d_real, d_fake: ``(B, C, H, W)`` logits.
        mask: ``(B, 1, H, W)`` LabelMix mask.

    Returns:
        Scalar mean squared difference over all elements.
    """
    target = mask * d_real + (1 - mask) * d_fake
    return F.mse_loss(d_mixed, target)
