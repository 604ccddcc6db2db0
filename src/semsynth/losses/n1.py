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

Data-parallel training (:class:`semsynth.batch_shard.BatchShard`): the pixel counts ``n_c``,
``K`` and ``B·H·W`` are those of the global batch (summed over the processes), and the
LabelMix bits are drawn for the global batch and sliced, so each process computes its share
of what one process would compute on the whole batch. (The official code, under
``nn.DataParallel``, balances the classes of each replica's share instead.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from semsynth.batch_shard import BatchShard


def class_balance_weights(label: torch.Tensor, semantic_nc: int, ignore_index: int | None,
                          shard: BatchShard | None = None, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Per-pixel class-balancing weights.

    Args:
        label: ``(B, H, W)`` int64 label ids (this process's slice of the batch).
        semantic_nc: number of label ids.
        ignore_index: don't-care id (weight 0), or ``None``.
        shard: where ``label`` sits in the global batch; ``None`` = ``label`` is the whole
            batch. With several processes the counts are summed over them (a collective
            call: every process must call it).
        valid: ``(B, H, W)`` bool or ``None``; pixels that are False (augmentation padding,
            :mod:`semsynth.nn.diffaug`) are not counted and get weight 0, like don't-care.

    Returns:
        ``(B, H, W)`` float32: ``B·H·W / (K · n_c)`` at pixels of id ``c``, 0 at don't-care,
        with ``B·H·W``, ``K`` and ``n_c`` of the global batch.
    """
    shard = shard or BatchShard.whole(label.shape[0], semantic_nc)
    if valid is not None:  # an id past the label space is left out of the counts
        counts = shard.label_counts(torch.where(valid, label, torch.full_like(label, semantic_nc))).clone()
    else:
        counts = shard.label_counts(label).clone()
    if ignore_index is not None:
        counts[ignore_index] = 0
    present = counts > 0
    k = present.sum().clamp(min=1).to(torch.float32)
    coeff = torch.where(present, shard.global_numel(label) / (k * counts.clamp(min=1)), torch.zeros_like(counts))
    weights = coeff[label]
    return weights if valid is None else weights * valid


def n1_cross_entropy(logits: torch.Tensor, label: torch.Tensor, for_real: bool,
                     ignore_index: int | None, shard: BatchShard | None = None,
                     valid: torch.Tensor | None = None, focal_gamma: float = 0.0) -> torch.Tensor:
    """The OASIS (N+1)-class cross-entropy.

    Args:
        logits: ``(B, semantic_nc + 1, H, W)`` discriminator output (channel 0 = fake).
        label: ``(B, H, W)`` int64 label ids.
        for_real: True → target ``1 + label`` with class-balancing weights (real images, and
            the generator's adversarial loss); False → target 0 ("fake") everywhere, no
            weights.
        ignore_index: don't-care id (weight 0 in the real term).
        shard: this process's slice of the global batch (class weights of the global
            batch; see :func:`class_balance_weights`); ``None`` = one process.
        valid: ``(B, H, W)`` bool or ``None``: pixels that are False (augmentation padding
            or cutout) contribute nothing to either term.
        focal_gamma: γ ≥ 0 of the focal variant (Lin et al., ICCV 2017): each pixel's CE is
            multiplied by ``(1 − p_target)^γ`` (p the softmax probability of the target,
            differentiated through as in the focal loss); 0 = plain CE.
            DP-SIMS trains with a pixel-wise focal N+1 loss (arXiv 2312.13314, Sec. 3).

    Returns:
        Scalar: mean over this process's ``B·H·W`` pixels (the mean of the processes'
        values, which data-parallel gradient averaging takes, is the global batch's mean).
    """
    logits = logits.float()  # fp32 softmax and weights under autocast (train.precision: bf16)
    target = label + 1 if for_real else torch.zeros_like(label)
    if valid is not None and for_real:
        target = torch.where(valid, target, torch.zeros_like(target))  # any id: weight 0 there
    per_pixel = F.cross_entropy(logits, target, reduction="none")
    if focal_gamma:
        p_t = torch.exp(-per_pixel)
        per_pixel = (1 - p_t).pow(focal_gamma) * per_pixel
    if for_real:
        weights = class_balance_weights(label, logits.shape[1] - 1, ignore_index, shard, valid)
        return (per_pixel * weights).mean()
    if valid is not None:
        per_pixel = per_pixel * valid
    return per_pixel.mean()


LABELMIX_MASKS = ("batch", "image")


def labelmix_mask(label: torch.Tensor, generator: torch.Generator | None = None,
                  per: str = "image", shard: BatchShard | None = None) -> torch.Tensor:
    """LabelMix mask: one random bit per label id, per batch or per image.

    Args:
        label: ``(B, H, W)`` int64 label ids.
        generator: RNG for the bits (CPU generator; the training loop owns it).
        per: ``"batch"`` — one bit per id shared by all images (the intent of the official
            OASIS ``generate_labelmix``); ``"image"`` — an independent bit per (image, id).
        shard: this process's slice of the global batch: the bits are drawn for ids
            ``0 … max id of the global batch`` and (``per="image"``) for every image of the
            global batch, then sliced, so they do not depend on the number of processes;
            ``None`` = one process.

    Returns:
        ``(B, 1, H, W)`` float32 in {0, 1}; every pixel of one id in one image (in the whole
        batch, with ``per="batch"``) shares its bit.

    Raises:
        ValueError: ``per`` not in ``("batch", "image")``.
    """
    if per not in LABELMIX_MASKS:
        raise ValueError(f"labelmix mask granularity must be one of {LABELMIX_MASKS}, got {per!r}")
    b = label.shape[0]
    shard = shard or BatchShard.whole(b, int(label.max()) + 1)
    nc = shard.max_label(label) + 1
    if per == "batch":
        bits = torch.randint(0, 2, (1, nc), generator=generator)
    else:
        bits = shard.randint(generator, 2, nc)
    bits = bits.to(label.device, torch.float32).expand(b, nc)
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
    target = mask * d_real.float() + (1 - mask) * d_fake.float()
    return F.mse_loss(d_mixed.float(), target)
