"""CRN (Chen & Koltun, ICCV 2017) as a :class:`semsynth.methods.base.Method`: a cascaded
refinement network trained by regression alone — no discriminator, no adversarial loss.

Loss (official CQFIO/PhotographicImageSynthesis ``demo_256p.py``; paper Sec. 3.3–3.4): the
perceptual distance between the real image and each of the ``k`` outputs at the image itself
and the VGG layers conv1_2, conv2_2, conv3_2, conv4_2, conv5_2 (after their ReLUs), weighted
1, 1/1.6, 1/2.3, 1/1.8, 1/2.8, 10/0.8 (the official 256p weights, lines 86–91), masked per
class and reduced by the minimum over the ``k`` outputs (:mod:`semsynth.losses.best_of_k`).
The class masks are the one-hot label map area-resized to each layer. The loss network uses
2×2 average pools, as the official one.

At 512p and 1024p (``demo_512p.py`` / ``demo_1024p.py``) the official loss is unmasked — the
mean absolute difference of each layer over all pixels and channels — with weights 1, 1/2.6,
1/4.8, 1/3.7, 1/5.6, 10/1.5 and one output. That is this same loss with ``k = 1`` and those
weights, with no option: the one-hot masks sum to 1 at every pixel (semsynth's label maps
carry the don't-care id as a channel, the official ones a void channel) and area resizing
keeps that sum, so the masked per-class terms add up to the unmasked mean, and with one
output the minimum over outputs is that output (``model.min_mean_weight`` then changes
nothing and is refused). ``tests/test_crn_highres.py`` checks the identity.

The image term is, as in the official code, the distance in the loss network's *input* space
(its ``'input'`` layer): for the official network the 0–255 image minus the ImageNet mean, for
ours the torchvision normalisation below. Both terms thus keep their official ratio at the
first layer, and the whole loss is ~1/58 of the official scale (Adam does not care).

**VGG-16 instead of the official VGG-19** (no VGG-19 weights offline; the shared
:mod:`semsynth.nn.perceptual` network): the same layer names, but conv3_2 … conv5_2 sit in
differently deep blocks and all weights come from another trained network. VGG-16 here gets
its own input normalisation (ImageNet mean and std on the [0, 1] image), not the 0–255 caffe
scale of the official MatConvNet VGG-19, so its feature magnitudes — and the balance the
official layer weights were tuned for — differ; numbers trained with this loss are "VGG-16
CRN" numbers (``docs/results.md`` says so).

Optimiser (the run's TrainConfig): Adam lr 1e-4 with TF's default betas (0.9, 0.999); no EMA
in the official code (``ema.decay 0`` in the paper preset).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Tuple

import torch
import torch.nn.functional as F

from semsynth.labels import one_hot
from semsynth.losses.best_of_k import class_masked_distance, min_over_outputs
from semsynth.methods.base import Method
from semsynth.methods.crn.generator import CRNGenerator, CRNGeneratorConfig
from semsynth.nn.perceptual import load_vgg16, require_vgg16
from semsynth.registry import register_method
from semsynth.types import ConfigError, DatasetInfo

__all__ = ["CRNConfig", "CRN", "CRN_LAYERS", "imagenet_normalize"]

#: VGG taps of the official loss (after the ReLU, as the official ``build_net`` returns).
CRN_LAYERS = ("relu1_2", "relu2_2", "relu3_2", "relu4_2", "relu5_2")

_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


def imagenet_normalize(image: torch.Tensor) -> torch.Tensor:
    """``(N, 3, H, W)`` in [-1, 1] → torchvision's VGG input ``((x + 1) / 2 − mean) / std``."""
    mean = image.new_tensor(_MEAN).view(1, 3, 1, 1)
    std = image.new_tensor(_STD).view(1, 3, 1, 1)
    return ((image + 1) / 2 - mean) / std


@dataclass(frozen=True)
class CRNConfig:
    """The ``model:`` section of a CRN run.

    Attributes:
        generator: :class:`semsynth.methods.crn.generator.CRNGeneratorConfig`.
        image_weight: weight of the image-level term (official 1; in the loss network's input
            units).
        layer_weights: weights of the five VGG terms (official 256p: 1/1.6, 1/2.3, 1/1.8,
            1/2.8, 10/0.8; 512p and 1024p: 1/2.6, 1/4.8, 1/3.7, 1/5.6, 10/1.5).
        min_mean_weight: ``ε`` of :func:`semsynth.losses.best_of_k.min_over_outputs` (0.001);
            only with ``generator.num_outputs > 1``.
    """

    generator: CRNGeneratorConfig = field(default_factory=CRNGeneratorConfig)
    image_weight: float = 1.0
    layer_weights: Tuple[float, ...] = (1 / 1.6, 1 / 2.3, 1 / 1.8, 1 / 2.8, 10 / 0.8)
    min_mean_weight: float = 0.001


@register_method("crn")
class CRN(Method):
    """Cascaded refinement network with the ``k``-output diversity loss; one phase ``"G"``.

    Args:
        model_cfg: :class:`CRNConfig`.
        info: label space (``semantic_nc`` one-hot channels).
        height, width: training resolution.

    Raises:
        ConfigError: ``layer_weights`` not of length 5, or a bad generator config.
        VGGUnavailable: the VGG-16 weights are not installed (the loss needs them).
    """

    config_class = CRNConfig
    phases = ("G",)

    @classmethod
    def ignored_keys(cls, cfg) -> dict[str, str]:
        """Base rules, and ``model.min_mean_weight`` with one output (the minimum over one
        output is its mean: the weight changes nothing)."""
        out = dict(super().ignored_keys(cfg))
        if cfg.model.generator.num_outputs == 1:
            out["model.min_mean_weight"] = ("with model.generator.num_outputs 1 the minimum over outputs is the "
                                            "one output: the weight changes nothing")
        return out

    @classmethod
    def build_generator(cls, model_cfg: CRNConfig, info: DatasetInfo, height: int, width: int) -> CRNGenerator:
        return CRNGenerator(model_cfg.generator, info.semantic_nc, height, width)

    def __init__(self, model_cfg: CRNConfig, info: DatasetInfo, height: int, width: int) -> None:
        super().__init__(model_cfg, info, height, width)
        if len(model_cfg.layer_weights) != len(CRN_LAYERS):
            raise ConfigError(f"model.layer_weights: need {len(CRN_LAYERS)} weights ({', '.join(CRN_LAYERS)}), "
                              f"got {list(model_cfg.layer_weights)}")
        require_vgg16("CRN's perceptual loss")
        self.set_networks(self.build_generator(model_cfg, info, height, width))  # TF-slim init

    def perceptual_per_class(self, outputs: torch.Tensor, image: torch.Tensor,
                             onehot: torch.Tensor) -> torch.Tensor:
        """``L_c(u)`` of every output and class.

        Args:
            outputs: ``(B, k, 3, H, W)`` generator outputs (raw, [-1, 1] scale).
            image: ``(B, 3, H, W)`` real images in [-1, 1].
            onehot: ``(B, C, H, W)`` float one-hot label map.

        Returns:
            ``(B, k, C)`` weighted sum over the image term and the five VGG layers.
        """
        cfg = self.model_cfg
        b, k = outputs.shape[:2]
        vgg = load_vgg16(image.device)
        x = imagenet_normalize(torch.cat([outputs.flatten(0, 1), image.detach()]).float())
        total = cfg.image_weight * class_masked_distance(x[: b * k].unflatten(0, (b, k)), x[b * k:], onehot)
        feats = vgg(x, CRN_LAYERS, pool="avg")
        for w, f in zip(cfg.layer_weights, feats):
            fake = f[: b * k].unflatten(0, (b, k))
            real = f[b * k:].detach()
            masks = F.interpolate(onehot, size=f.shape[-2:], mode="area")
            total = total + w * class_masked_distance(fake, real, masks)
        return total

    def phase_losses(self, phase, image, label, rng, shard=None):
        onehot = one_hot(label, self.info.semantic_nc)
        outputs = self.generator.forward_all(onehot)
        per_class = self.perceptual_per_class(outputs, image, onehot)
        loss = min_over_outputs(per_class, self.model_cfg.min_mean_weight)
        return {"G_perceptual": loss, "total": loss}
