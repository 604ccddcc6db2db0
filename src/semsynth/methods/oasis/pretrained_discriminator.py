"""An OASIS N+1 segmentation discriminator whose encoder is a frozen ImageNet network.

The idea is DP-SIMS's (Berrada et al., "Unlocking Pre-trained Image Backbones for Semantic
Image Synthesis", CVPR 2024, arXiv 2312.13314, Sec. 3 and Fig. 2): OASIS's U-Net
discriminator keeps its N+1 per-pixel output and its losses, but its encoder is a frozen,
pretrained classification backbone; its multi-scale features are *conditioned* (the paper:
raw backbone features are ill-conditioned, a few channels dominate in magnitude) and a
trainable decoder turns them into per-pixel logits. Its code is not public, and the
equations of its conditioning, decoder and losses could not be read offline; what is built
here is semsynth's own, chosen by measurement on CamVid (``docs/results.md``):

* **Backbone**: EfficientNet-Lite0 (:mod:`semsynth.nn.efficientnet_lite`; Projected GAN's
  feature network, Sauer et al., NeurIPS 2021), frozen (no parameter is trained, eval-mode
  BatchNorm whatever the D's mode). The image is resized (bilinear) by ``backbone_scale``
  (Projected GAN resizes small images to 224, ``pg_modules/discriminator.py``) and
  preprocessed as the weights were trained. Features after ``stages`` (default 2, 3, 5, 7:
  24, 40, 112, 320 channels at strides 4, 8, 16, 32 — Projected GAN's four taps,
  ``pg_modules/projector.py``). Gradients reach G through it.
* **Feature conditioning**: every channel standardised by fixed statistics of *real*
  images' features: mean and standard deviation per channel, set from the first real batch
  the discriminator sees in training and then followed as an exponential moving average
  (momentum ``stats_momentum``) of real batches only; buffers, so checkpoints and resumes
  carry them. Generated and LabelMix images are normalised with the real statistics, never
  their own: nothing in D depends on other images of the batch.
* **Decoder**: top-down U-Net as OASIS's (residual blocks, leaky ReLU 0.2, spectral norm):
  the deepest conditioned feature through a 1×1 conv, then per shallower tap: resize to its
  size (bilinear), concatenate the tap's 1×1 projection, a residual block. Then a
  full-resolution branch that the backbone cannot give at 72×96 (its finest tap is at
  stride 4 of the resized image): the decoder output resized to the image size and
  concatenated with a small trainable image stem (two 3×3 convs on the image), one more
  residual block, a 1×1 classifier to ``semantic_nc + 1`` logits (channel 0 = fake).

Shapes: ``(N, 3, H, W)`` float in [-1, 1] → ``(N, semantic_nc + 1, H, W)``; any ``H, W``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from semsynth.nn.efficientnet_lite import LITE0_STAGE_CHANNELS, EfficientNetLite0, load_lite0, preprocess_lite0
from semsynth.nn.spectral import maybe_spectral_norm
from semsynth.types import ConfigError

__all__ = ["PretrainedDConfig", "PretrainedUNetDiscriminator", "BACKBONES"]

#: Values of ``PretrainedDConfig.backbone``.
BACKBONES = ("efficientnet_lite0",)


@dataclass(frozen=True)
class PretrainedDConfig:
    """``model.pretrained`` (used when ``model.discriminator_type: pretrained_unet``).

    Attributes:
        backbone: the frozen feature network (``efficientnet_lite0``).
        backbone_scale: the image is resized by this factor before the backbone (> 0).
        stages: backbone stages whose outputs feed the decoder (increasing, in 1..7).
        channels: decoder widths, one per stage, deepest first (same length as ``stages``).
        last_channels: width of the full-resolution block and of the image stem.
        feature_norm: standardise backbone features by real-image statistics (the
            conditioning); ``false`` feeds the raw features.
        stats_momentum: EMA momentum of those statistics per D step (0 = keep the first
            batch's).
        spectral_norm: spectral norm on the decoder's convs (as OASIS's D).
    """

    backbone: str = "efficientnet_lite0"
    backbone_scale: float = 2.0
    stages: Tuple[int, ...] = (2, 3, 5, 7)
    channels: Tuple[int, ...] = (128, 128, 64, 64)
    last_channels: int = 32
    feature_norm: bool = True
    stats_momentum: float = 0.01
    spectral_norm: bool = True


class _Block(nn.Module):
    """Residual block: ``x + conv3(lrelu(conv3(lrelu(x))))`` with a 1×1 shortcut when widths
    differ (OASIS ``residual_block_D`` without resampling)."""

    def __init__(self, fin: int, fout: int, sn: bool) -> None:
        super().__init__()
        self.conv1 = maybe_spectral_norm(nn.Conv2d(fin, fout, 3, padding=1), sn)
        self.conv2 = maybe_spectral_norm(nn.Conv2d(fout, fout, 3, padding=1), sn)
        self.conv_s = maybe_spectral_norm(nn.Conv2d(fin, fout, 1), sn) if fin != fout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dx = self.conv2(F.leaky_relu(self.conv1(F.leaky_relu(x, 0.2)), 0.2))
        return (self.conv_s(x) if self.conv_s is not None else x) + dx


class _Decoder(nn.Module):
    """Everything trainable of :class:`PretrainedUNetDiscriminator`."""

    def __init__(self, cfg: PretrainedDConfig, tap_channels: list[int], semantic_nc: int) -> None:
        super().__init__()
        sn = cfg.spectral_norm
        ch = list(cfg.channels)
        deep_first = tap_channels[::-1]
        self.bottom = maybe_spectral_norm(nn.Conv2d(deep_first[0], ch[0], 1), sn)
        self.lateral = nn.ModuleList(maybe_spectral_norm(nn.Conv2d(c, ch[i + 1], 1), sn)
                                     for i, c in enumerate(deep_first[1:]))
        self.blocks = nn.ModuleList(_Block(ch[i] + ch[i + 1], ch[i + 1], sn) for i in range(len(ch) - 1))
        last = cfg.last_channels
        self.stem = nn.Sequential(maybe_spectral_norm(nn.Conv2d(3, last, 3, padding=1), sn), nn.LeakyReLU(0.2),
                                  maybe_spectral_norm(nn.Conv2d(last, last, 3, padding=1), sn))
        self.full = _Block(ch[-1] + last, last, sn)
        self.classifier = nn.Conv2d(last, semantic_nc + 1, 1)

    def forward(self, image: torch.Tensor, feats: list[torch.Tensor]) -> torch.Tensor:
        feats = feats[::-1]
        x = self.bottom(feats[0])
        for lat, block, f in zip(self.lateral, self.blocks, feats[1:]):
            x = F.interpolate(x, size=f.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, lat(f)], dim=1))
        x = F.interpolate(x, size=image.shape[-2:], mode="bilinear", align_corners=False)
        x = self.full(torch.cat([x, self.stem(image)], dim=1))
        return self.classifier(F.leaky_relu(x, 0.2))


class PretrainedUNetDiscriminator(nn.Module):
    """D(image) → per-pixel N+1 logits over a frozen ImageNet backbone (module docstring).

    Args:
        cfg: :class:`PretrainedDConfig`.
        semantic_nc: label ids (don't-care included); the output has ``semantic_nc + 1``
            channels.
        pretrained: load the ImageNet weights (``True``; needs the weight package, see
            :func:`semsynth.nn.efficientnet_lite.require_lite0`) or leave the backbone
            random (``False``: for shapes only, or when a checkpoint's weights follow).

    Attributes:
        backbone: the frozen network; ``decoder``: all trainable parameters.

    Raises:
        ConfigError: unknown backbone, stages out of range, ``channels`` of another length
            than ``stages``, ``backbone_scale`` ≤ 0, momentum outside [0, 1].
        semsynth.nn.efficientnet_lite.Lite0Unavailable: weights not installed.
    """

    def __init__(self, cfg: PretrainedDConfig, semantic_nc: int, pretrained: bool = True) -> None:
        super().__init__()
        if cfg.backbone not in BACKBONES:
            raise ConfigError(f"model.pretrained.backbone: {cfg.backbone!r} is not one of {list(BACKBONES)}")
        stages = list(cfg.stages)
        if not stages or sorted(set(stages)) != stages or not all(1 <= s <= 7 for s in stages):
            raise ConfigError(f"model.pretrained.stages: {stages} must be increasing stage numbers in 1..7")
        if len(cfg.channels) != len(stages):
            raise ConfigError(f"model.pretrained.channels: {list(cfg.channels)} needs one width per stage "
                              f"({len(stages)} stages {stages})")
        if cfg.backbone_scale <= 0:
            raise ConfigError(f"model.pretrained.backbone_scale: {cfg.backbone_scale} must be > 0")
        if not 0.0 <= cfg.stats_momentum <= 1.0:
            raise ConfigError(f"model.pretrained.stats_momentum: {cfg.stats_momentum} must be in [0, 1]")
        self.cfg = cfg
        self.stages = stages
        self.backbone = load_lite0() if pretrained else EfficientNetLite0().requires_grad_(False).eval()
        taps = [LITE0_STAGE_CHANNELS[s - 1][0] for s in stages]
        for i, c in enumerate(taps):
            self.register_buffer(f"feat_mean{i}", torch.zeros(c))
            self.register_buffer(f"feat_std{i}", torch.ones(c))
        self.register_buffer("stats_ready", torch.zeros((), dtype=torch.bool))
        self.decoder = _Decoder(cfg, taps, semantic_nc)

    def train(self, mode: bool = True) -> "PretrainedUNetDiscriminator":
        """Set the decoder's mode; the backbone stays in eval mode (frozen statistics)."""
        super().train(mode)
        self.backbone.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The decoder's parameters (what D's optimizer updates); the backbone is excluded."""
        return list(self.decoder.parameters())

    @torch.no_grad()
    def _observe(self, feats: list[torch.Tensor]) -> None:
        first = not bool(self.stats_ready)
        m = 1.0 if first else self.cfg.stats_momentum
        for i, f in enumerate(feats):
            f = f.float()  # fp32 statistics under autocast (train.precision: bf16)
            mean = f.mean(dim=(0, 2, 3))
            std = f.std(dim=(0, 2, 3)).clamp(min=1e-3)
            getattr(self, f"feat_mean{i}").lerp_(mean, m)
            getattr(self, f"feat_std{i}").lerp_(std, m)
        self.stats_ready.fill_(True)

    def forward(self, image: torch.Tensor, real: slice | None = None) -> torch.Tensor:
        """Per-pixel logits ``(N, semantic_nc + 1, H, W)`` of ``(N, 3, H, W)`` images in [-1, 1].

        Args:
            real: the rows of ``image`` that are real photos; in training mode their
                backbone features update the conditioning statistics (before use). Pass it
                only in D's own update (never for generated images alone).
        """
        h, w = image.shape[-2:]
        x = preprocess_lite0(image)
        s = self.cfg.backbone_scale
        if s != 1.0:
            x = F.interpolate(x, size=(max(1, round(h * s)), max(1, round(w * s))), mode="bilinear",
                              align_corners=False)
        feats = self.backbone.features(x, self.stages)
        if self.cfg.feature_norm:
            if self.training and real is not None:
                self._observe([f[real] for f in feats])
            feats = [(f - getattr(self, f"feat_mean{i}")[:, None, None]) / getattr(self, f"feat_std{i}")[:, None, None]
                     for i, f in enumerate(feats)]
        return self.decoder(image, feats)
