"""The CC-FPSE generator (Liu et al., "Learning to Predict Layout-to-image Conditional
Convolutions for Semantic Image Synthesis", NeurIPS 2019, Sec. 3.1; official xh-liu/CC-FPSE
``models/networks/generator.py`` (``CondConvGenerator``), ``architecture.py``
(``DepthsepCCBlock``) and ``condconv.py`` (``DepthConv``)).

* **Input.** Without the encoder, the one-hot label map resized (nearest) to the first
  block's size, then a 3×3 conv to ``16·ngf`` channels. With it (``use_vae``, the published
  recipe: ``train.sh`` and every ``test_*.sh`` pass ``--use_vae``), a ``z_dim`` (256) latent
  through ``Linear(z_dim, 16·ngf·h0·w0)``, reshaped; the shared VAE image encoder
  (:mod:`semsynth.nn.encoder`, the official ``encoder.py``, identical to SPADE's) gives the
  latent of the real photo in training.
* **Weight-prediction network**, a feature pyramid over the label map: a 3×3 conv at full
  resolution, then ``k`` stride-2 3×3 convs down to the first block's size (``k`` = 5
  upsamplings for ``normal``, 6 for ``more``), all ``ngf`` wide; a top-down path adds the
  nearest-upsampled coarser output to a 1×1 lateral conv of each level and smooths it with a
  3×3 conv. Every conv has spectral norm, no bias, BatchNorm with affine parameters and
  LeakyReLU(0.2) (official ``norm_G = spectralsync_batch``; semsynth uses plain BatchNorm on
  one device). The global context is the bottom-up path reaching 1/32 (1/64) of the size.
* **Blocks** (``DepthsepCCBlock``): each block's condition is ``[one-hot map, pyramid level]``
  (``semantic_nc + ngf`` channels) at its resolution. Four heads (3×3 conv → ReLU → 3×3 conv,
  128 hidden, no spectral norm) predict per pixel: the 3×3 depthwise kernels of two
  conditional convolutions (``9·C`` channels each) and two channel-attention maps (sigmoid).
  ``dx = LReLU(A1 · conv1x1(CC(BN(x), W1)))``; ``dx = LReLU(A2 · conv1x1(CC(BN(dx), W2)))``;
  output ``shortcut(x) + dx``, the shortcut being identity, or SPADE → 1×1 spectral-norm conv
  when the width changes (the SPADE normalisation of the official code lives there).
* **Schedule** as SPADE: head_0, middle_0, middle_1, up_0 … up_3 with nearest ×2 between
  (``more`` also upsamples before middle_1); widths 16·ngf → ngf; LeakyReLU(0.2) → 3×3 conv →
  tanh. Sizes that are not divisible by ``2^k`` follow :func:`semsynth.nn.sizes.size_chain`.

Differences from the official code, by design: the official blocks also hold three affine
BatchNorms that their forward pass never uses (inside ``DepthConv`` and ``norm_0``); they are
left out (2·fin + 4·min(fin, fout) parameters per block: 26,112 fewer at ngf 64 for every
dataset, −0.02 %), and the second
kernel head predicts ``min(fin, fout)·9`` channels (the width it convolves; the official
``fout·9`` is the same number in every official block).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from semsynth.methods.base import Generator
from semsynth.nn.encoder import ConvEncoder, EncoderConfig, latent_input
from semsynth.nn.resize import resize_nearest
from semsynth.nn.sizes import check_label_input, size_chain, upsampling_stages
from semsynth.nn.spade import SPADE
from semsynth.nn.spectral import maybe_spectral_norm, spectral_norm

__all__ = ["CCFPSEGeneratorConfig", "CCFPSEGenerator", "ConditionalConvBlock", "LabelPyramid",
           "conditional_depthwise_conv"]

#: upsampling stages per mode (official: ``more`` for Cityscapes, else ``normal``).
UPSAMPLING_LAYERS = {"normal": 5, "more": 6}


@dataclass(frozen=True)
class CCFPSEGeneratorConfig:
    """CC-FPSE generator widths (official defaults).

    Attributes:
        ngf: base width (64); blocks run at 16, 16, 16, 8, 4, 2, 1 × ngf; the label
            pyramid is ``ngf`` wide.
        num_upsampling_layers: ``normal`` (5; ADE20K, COCO-Stuff) or ``more`` (6; Cityscapes).
        hidden: channels of the weight-prediction heads' first conv and of SPADE's (128).
        spectral_norm: on the pyramid convs and the shortcut conv (official: yes).
        use_vae: the VAE image encoder and a latent input (the published recipe); otherwise
            the label-map input and no noise (deterministic).
        z_dim: latent size (256; only with ``use_vae``).
        encoder: :class:`semsynth.nn.encoder.EncoderConfig` (only with ``use_vae``).
    """

    ngf: int = 64
    num_upsampling_layers: str = "normal"
    hidden: int = 128
    spectral_norm: bool = True
    use_vae: bool = False
    z_dim: int = 256
    encoder: EncoderConfig = field(default_factory=EncoderConfig)


def conditional_depthwise_conv(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """A 3×3 depthwise convolution whose kernel differs at every pixel (CC-FPSE Eq. 2;
    official ``DepthConv``): zero padding 1, stride 1, no bias.

    ``out[n, c, i, j] = Σ_{a,b ∈ 0..2} weights[n, 9c + 3a + b, i, j] · x[n, c, i + a − 1, j + b − 1]``

    Implemented as nine shifted views of the padded input, each multiplied by its kernel
    tap and summed (no 9× unfolded copy of ``x``).

    Args:
        x: ``(N, C, H, W)`` float.
        weights: ``(N, 9·C, H, W)`` float, the predicted kernels (tap-major within a channel,
            ``nn.Unfold``'s order).

    Returns:
        ``(N, C, H, W)``.

    Raises:
        ValueError: ``weights`` is not ``(N, 9·C, H, W)``.
    """
    n, c, h, w = x.shape
    if tuple(weights.shape) != (n, 9 * c, h, w):
        raise ValueError(f"conditional_depthwise_conv: weights {tuple(weights.shape)}, expected {(n, 9 * c, h, w)}")
    xp = F.pad(x, (1, 1, 1, 1))
    wt = weights.view(n, c, 9, h, w)
    out = None
    for a in range(3):
        for b in range(3):
            term = wt[:, :, 3 * a + b] * xp[:, :, a:a + h, b:b + w]
            out = term if out is None else out + term
    return out


def _head(cond_nc: int, hidden: int, out_nc: int, sigmoid: bool) -> nn.Sequential:
    mods = [nn.Conv2d(cond_nc, hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(hidden, out_nc, 3, padding=1)]
    return nn.Sequential(*mods, nn.Sigmoid()) if sigmoid else nn.Sequential(*mods)


class ConditionalConvBlock(nn.Module):
    """CC-FPSE's residual block of two predicted depthwise-separable convolutions.

    Args:
        fin, fout: input and output channels (``fmid = min(fin, fout)`` in between).
        cond_nc: condition channels (``semantic_nc + ngf``).
        hidden: channels of the heads' first conv and of the shortcut's SPADE (128).
        use_spectral_norm: on the shortcut's 1×1 conv.

    Shapes: ``x`` ``(N, fin, h, w)``, ``cond`` ``(N, cond_nc, h, w)`` → ``(N, fout, h, w)``.
    """

    def __init__(self, fin: int, fout: int, cond_nc: int, hidden: int = 128, use_spectral_norm: bool = True) -> None:
        super().__init__()
        fmid = min(fin, fout)
        self.gen_weights1 = _head(cond_nc, hidden, 9 * fin, sigmoid=False)
        self.gen_weights2 = _head(cond_nc, hidden, 9 * fmid, sigmoid=False)
        self.gen_attention1 = _head(cond_nc, hidden, fmid, sigmoid=True)
        self.gen_attention2 = _head(cond_nc, hidden, fout, sigmoid=True)
        self.norm_1 = nn.BatchNorm2d(fin)
        self.conv_1 = nn.Conv2d(fin, fmid, 1)
        self.norm_2 = nn.BatchNorm2d(fmid)
        self.conv_3 = nn.Conv2d(fmid, fout, 1)
        self.learned_shortcut = fin != fout
        if self.learned_shortcut:
            self.norm_s = SPADE(fin, cond_nc, hidden, 3)
            self.conv_s = maybe_spectral_norm(nn.Conv2d(fin, fout, 1, bias=False), use_spectral_norm)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x_s = self.conv_s(self.norm_s(x, cond)) if self.learned_shortcut else x
        dx = conditional_depthwise_conv(self.norm_1(x), self.gen_weights1(cond))
        dx = F.leaky_relu(self.conv_1(dx) * self.gen_attention1(cond), 0.2)
        dx = conditional_depthwise_conv(self.norm_2(dx), self.gen_weights2(cond))
        dx = F.leaky_relu(self.conv_3(dx) * self.gen_attention2(cond), 0.2)
        return x_s + dx


def _pyramid_conv(in_nc: int, out_nc: int, k: int, stride: int, sn: bool) -> nn.Sequential:
    conv = nn.Conv2d(in_nc, out_nc, k, stride, k // 2, bias=False)
    return nn.Sequential(spectral_norm(conv) if sn else conv, nn.BatchNorm2d(out_nc), nn.LeakyReLU(0.2))


class LabelPyramid(nn.Module):
    """The weight-prediction network's feature pyramid over the label map.

    Args:
        semantic_nc: one-hot channels; nf: width; levels: stride-2 convs (5 or 6).
        sn: spectral norm on every conv.

    Shapes: ``(N, semantic_nc, H, W)`` → ``levels + 1`` maps ``(N, nf, h_i, w_i)``, coarsest
    first, at the sizes of :func:`semsynth.nn.sizes.size_chain` (a stride-2 3×3 conv with
    padding 1 maps ``n`` to ``ceil(n / 2)``, the chain's rule).
    """

    def __init__(self, semantic_nc: int, nf: int, levels: int, sn: bool) -> None:
        super().__init__()
        self.enc = nn.ModuleList([_pyramid_conv(semantic_nc, nf, 3, 1, sn)]
                                 + [_pyramid_conv(nf, nf, 3, 2, sn) for _ in range(levels)])
        self.lat = nn.ModuleList([_pyramid_conv(nf, nf, 1, 1, sn) for _ in range(levels)])
        self.dec = nn.ModuleList([_pyramid_conv(nf, nf, 3, 1, sn) for _ in range(levels)])

    def forward(self, label_onehot: torch.Tensor) -> list[torch.Tensor]:
        bottom_up, x = [], label_onehot
        for conv in self.enc:
            x = conv(x)
            bottom_up.append(x)
        out = [bottom_up[-1]]
        for i, (lat, dec) in enumerate(zip(self.lat, self.dec)):
            skip = bottom_up[-2 - i]
            up = resize_nearest(out[-1], skip.shape[-2:])
            out.append(dec(up + lat(skip)))
        return out


class CCFPSEGenerator(Generator):
    """G(label map) → image, with conditional convolutions predicted from the label map.

    Args:
        cfg: :class:`CCFPSEGeneratorConfig`.
        semantic_nc: one-hot channels of the label map.
        height, width: output size.

    Attributes:
        z_dim, noise: with ``use_vae`` ``cfg.z_dim`` and ``"vector"`` (one latent per image);
            otherwise 0 and ``"none"`` (deterministic: one image per label map).
        encoder: the :class:`semsynth.nn.encoder.ConvEncoder` (``use_vae``) or ``None``.

    Raises:
        ConfigError: an unknown ``num_upsampling_layers``.
    """

    def __init__(self, cfg: CCFPSEGeneratorConfig, semantic_nc: int, height: int, width: int) -> None:
        super().__init__(cfg, semantic_nc, height, width)
        mode = cfg.num_upsampling_layers
        k = upsampling_stages(mode, UPSAMPLING_LAYERS)
        self.sizes = list(zip(size_chain(height, k), size_chain(width, k)))
        nf = cfg.ngf
        self.z_dim = cfg.z_dim if cfg.use_vae else 0
        self.noise = "vector" if cfg.use_vae else "none"
        if cfg.use_vae:
            self.fc = nn.Linear(cfg.z_dim, 16 * nf * self.sizes[0][0] * self.sizes[0][1])
        else:
            self.fc = nn.Conv2d(semantic_nc, 16 * nf, 3, padding=1)
        self.pyramid = LabelPyramid(semantic_nc, nf, k, cfg.spectral_norm)
        cond_nc = semantic_nc + nf
        # (name, in width, out width, resolution level)
        plan = [("head_0", 16, 16, 0), ("middle_0", 16, 16, 1), ("middle_1", 16, 16, 1 if mode == "normal" else 2),
                ("up_0", 16, 8, k - 3), ("up_1", 8, 4, k - 2), ("up_2", 4, 2, k - 1), ("up_3", 2, 1, k)]
        self.blocks = nn.ModuleDict({name: ConditionalConvBlock(a * nf, b * nf, cond_nc, cfg.hidden, cfg.spectral_norm)
                                     for name, a, b, _ in plan})
        self._level = {name: lvl for name, _, _, lvl in plan}
        self.conv_img = nn.Conv2d(nf, 3, 3, padding=1)
        self.encoder = ConvEncoder(cfg.encoder, cfg.z_dim) if cfg.use_vae else None

    def forward(self, label_onehot: torch.Tensor, z: torch.Tensor | None = None,
                seeds: Sequence[int] | None = None) -> torch.Tensor:
        """Generate images.

        Args:
            label_onehot: ``(N, semantic_nc, H, W)`` float one-hot at the configured size.
            z: with ``use_vae``, ``(N, z_dim)`` latent (the encoder's sample or μ); must be
                ``None`` without it.
            seeds: with ``use_vae`` and ``z=None``, one seed per sample (z ~ N(0, I) seeded
                per sample); with both ``None``, drawn from torch's global RNG. Ignored
                without ``use_vae``.

        Returns:
            ``(N, 3, H, W)`` float in [-1, 1].

        Raises:
            ValueError: wrong channels or size; a latent that is not ``(N, z_dim)``; a ``z``
                given to a generator without the encoder.
        """
        n, c, h, w = check_label_input(label_onehot, self.semantic_nc, self.height, self.width)
        levels = self.pyramid(label_onehot)
        if self.encoder is not None:
            x = latent_input(self.fc, z, seeds, n, self.sizes[0], label_onehot, "CC-FPSE")
        elif z is not None:
            raise ValueError("this CC-FPSE generator takes no noise (built without model.generator.use_vae)")
        else:
            x = self.fc(resize_nearest(label_onehot, self.sizes[0]))
        for name, blk in self.blocks.items():
            lvl = self._level[name]
            if x.shape[-2:] != self.sizes[lvl]:
                x = resize_nearest(x, self.sizes[lvl])
            seg = label_onehot if self.sizes[lvl] == (h, w) else \
                resize_nearest(label_onehot, self.sizes[lvl])
            x = blk(x, torch.cat([seg, levels[lvl]], 1))
        return torch.tanh(self.conv_img(F.leaky_relu(x, 0.2)))
