"""CC-FPSE's feature-pyramid semantics-embedding discriminator (Liu et al., NeurIPS 2019,
Sec. 3.2; official xh-liu/CC-FPSE ``models/networks/discriminator.py``, ``FPSEDiscriminator``).

* The image alone goes bottom-up: five 3×3 stride-2 convs, ``ndf``·(1, 2, 4, 8, 8) wide
  (1/2 … 1/32 of the size). A top-down path adds the bilinearly upsampled coarser map to 1×1
  lateral convs (``4·ndf`` wide) of levels 1/4 … 1/32; a 3×3 conv to ``2·ndf`` then gives the
  features at 1/4, 1/8 and 1/16. All these convs: spectral norm, no bias, parameter-free
  instance norm, LeakyReLU(0.2) (official ``norm_D = spectralinstance``).
* Three heads shared by the scales (plain 1×1 convs with bias): an unconditional real/fake
  score ``t`` (→ 1), a semantic projection ``s`` (→ ``2·ndf``) and the label embedding
  ``e`` (one-hot → ``2·ndf``, at full resolution, then average-pooled to each scale).
* Score at each scale: ``D_s = t(f_s) + Σ_c e_s[c] · s(f_s)[c]`` — the unconditional score
  plus the per-pixel inner product of the image's semantic features with the embedded
  label map (the projection-discriminator idea applied per pixel).
* For feature matching the discriminator returns the bottom-up features at 1/4 … 1/32.

Parameters: ``5,171,137 + 128·(semantic_nc + 1)`` at ``ndf = 64`` (the official counts).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from semsynth.nn.norm import normed_conv

__all__ = ["FPSEDiscriminatorConfig", "FPSEDiscriminator"]


@dataclass(frozen=True)
class FPSEDiscriminatorConfig:
    """Attributes:
        ndf: base width (official 64).
        norm: the convs' norm (:data:`semsynth.nn.norm.CONV_NORMS`; official ``spectralinstance``).
    """

    ndf: int = 64
    norm: str = "spectralinstance"


class FPSEDiscriminator(nn.Module):
    """D(image, label map) → per-scale score maps and features.

    Args:
        cfg: :class:`FPSEDiscriminatorConfig`.
        semantic_nc: one-hot channels of the label map.

    Raises:
        ConfigError: an unknown norm.
    """

    def __init__(self, cfg: FPSEDiscriminatorConfig, semantic_nc: int) -> None:
        super().__init__()
        nf, norm = cfg.ndf, cfg.norm

        def conv(i: int, o: int, k: int, s: int) -> nn.Sequential:
            return nn.Sequential(*normed_conv(i, o, k, s, k // 2, norm, "model.discriminator.norm"), nn.LeakyReLU(0.2))

        widths = [3, nf, 2 * nf, 4 * nf, 8 * nf, 8 * nf]
        self.enc = nn.ModuleList([conv(widths[i], widths[i + 1], 3, 2) for i in range(5)])
        self.lat = nn.ModuleList([conv(widths[i], 4 * nf, 1, 1) for i in (2, 3, 4, 5)])  # levels 1/4 … 1/32
        self.final = nn.ModuleList([conv(4 * nf, 2 * nf, 3, 1) for _ in range(3)])       # 1/4, 1/8, 1/16
        self.tf = nn.Conv2d(2 * nf, 1, 1)
        self.seg = nn.Conv2d(2 * nf, 2 * nf, 1)
        self.embedding = nn.Conv2d(semantic_nc, 2 * nf, 1)

    def forward(self, image: torch.Tensor, label_onehot: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Score maps and features.

        Args:
            image: ``(N, 3, H, W)`` in [-1, 1].
            label_onehot: ``(N, semantic_nc, H, W)`` float.

        Returns:
            ``(features, scores)``: the 4 bottom-up features at 1/4 … 1/32 (``2, 4, 8, 8 ×
            ndf`` channels) and the 3 score maps ``(N, 1, h_s, w_s)`` at 1/4, 1/8, 1/16
            (sizes halve with ceiling).

        Raises:
            ValueError: batch or size of image and label map differ.
        """
        if image.shape[0] != label_onehot.shape[0] or image.shape[-2:] != label_onehot.shape[-2:]:
            raise ValueError(f"FPSE D: image {tuple(image.shape)} and label map {tuple(label_onehot.shape)} differ")
        feats, x = [], image
        for conv in self.enc:
            x = conv(x)
            feats.append(x)
        # top-down over levels 1/32 → 1/4 (feats[1..4])
        td = [self.lat[3](feats[4])]
        for i in (2, 1, 0):
            skip = self.lat[i](feats[i + 1])
            td.insert(0, F.interpolate(td[0], size=skip.shape[-2:], mode="bilinear", align_corners=False) + skip)
        emb = self.embedding(label_onehot)
        scores = []
        for final, t in zip(self.final, td[:3]):
            f = final(t)
            emb = F.interpolate(emb, size=f.shape[-2:], mode="area")
            scores.append(self.tf(f) + (emb * self.seg(f)).sum(1, keepdim=True))
        return feats[1:], scores
