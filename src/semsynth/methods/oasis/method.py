"""OASIS as a :class:`semsynth.methods.base.Method` (Schönfeld et al., ICLR 2021).

Per step (official ``train.py`` order): a generator update with the class-balanced N+1
adversarial loss, then a discriminator update with the N+1 loss on real and generated
images plus λ_LM · LabelMix. No VGG perceptual loss. Optimizer settings (Adam β = (0,
0.999), lr G 1e-4 / D 4e-4) live in the run's TrainConfig.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from semsynth.labels import one_hot
from semsynth.methods.base import Method
from semsynth.methods.oasis.discriminator import DiscriminatorConfig, OASISDiscriminator
from semsynth.methods.oasis.generator import GeneratorConfig, OASISGenerator
from semsynth.methods.oasis.losses import LABELMIX_MASKS, labelmix_loss, labelmix_mask, n1_cross_entropy
from semsynth.nn.init import apply_init
from semsynth.registry import register_method
from semsynth.types import ConfigError, DatasetInfo


@dataclass(frozen=True)
class OASISConfig:
    """The ``model:`` section of an OASIS run.

    Attributes:
        generator, discriminator: network widths/depths.
        lambda_labelmix: weight of LabelMix in the D loss (paper: 10; Cityscapes 5).
        labelmix: use LabelMix at all.
        labelmix_mask: ``"image"`` (one bit per class per image; the default: better on
            CamVid val at equal budget, see docs/results.md) or ``"batch"`` (one bit per
            class shared by the whole batch: the official code, used by the paper presets
            ``configs/oasis/{ade20k,cityscapes,coco_stuff}.yaml``).
        init: ``"official"`` (xavier-normal gain 0.02, zero biases; official
            ``init_networks``, :mod:`semsynth.nn.init`) or ``"pytorch"`` (PyTorch's layer
            defaults), for G and D.
    """

    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    lambda_labelmix: float = 10.0
    labelmix: bool = True
    labelmix_mask: str = "image"
    init: str = "official"


@register_method("oasis")
class OASIS(Method):
    """OASIS generator + U-Net N+1 segmentation discriminator.

    Args:
        model_cfg: :class:`OASISConfig`.
        info: dataset label space (``semantic_nc`` one-hot channels; don't-care weight 0).
        height, width: training resolution.
    """

    config_class = OASISConfig
    phases = ("G", "D")

    def __init__(self, model_cfg: OASISConfig, info: DatasetInfo, height: int, width: int) -> None:
        super().__init__(model_cfg, info, height, width)
        self.generator = OASISGenerator(model_cfg.generator, info.semantic_nc, height, width)
        self.discriminator = OASISDiscriminator(model_cfg.discriminator, info.semantic_nc)
        if model_cfg.labelmix_mask not in LABELMIX_MASKS:
            raise ConfigError(f"model.labelmix_mask: {model_cfg.labelmix_mask!r} is not one of {list(LABELMIX_MASKS)}")
        apply_init(self.generator, model_cfg.init, "model.init")
        apply_init(self.discriminator, model_cfg.init, "model.init")

    def phase_parameters(self, phase: str):
        return (self.generator if phase == "G" else self.discriminator).parameters()

    def phase_lr(self, phase: str, train_cfg) -> float:
        return float(train_cfg.lr_g if phase == "G" else train_cfg.lr_d)

    def _noise(self, n: int, rng: torch.Generator, device) -> torch.Tensor | None:
        if self.z_dim == 0:
            return None
        return torch.randn(n, self.z_dim, generator=rng).to(device)

    def phase_losses(self, phase, image, label, rng):
        onehot = one_hot(label, self.info.semantic_nc)
        ignore = self.info.ignore_index
        z = self._noise(label.shape[0], rng, label.device)
        if phase == "G":
            fake = self.generator(onehot, z)
            adv = n1_cross_entropy(self.discriminator(fake), label, True, ignore)
            return {"total": adv, "G_adv": adv}
        with torch.no_grad():
            fake = self.generator(onehot, z)
        b = image.shape[0]
        batch = [fake, image]
        if self.model_cfg.labelmix:
            mask = labelmix_mask(label, rng, self.model_cfg.labelmix_mask)
            batch.append(mask * image + (1 - mask) * fake)
        # One D forward on [fake; real; mix]: D has no batch statistics, so this equals
        # three separate forwards (the official code) up to spectral-norm power steps.
        logits = self.discriminator(torch.cat(batch))
        d_fake, d_real = logits[:b], logits[b:2 * b]
        loss_fake = n1_cross_entropy(d_fake, label, False, ignore)
        loss_real = n1_cross_entropy(d_real, label, True, ignore)
        out = {"D_fake": loss_fake, "D_real": loss_real}
        total = loss_fake + loss_real
        if self.model_cfg.labelmix:
            lm = labelmix_loss(logits[2 * b:], d_real, d_fake, mask)
            out["D_labelmix"] = lm
            total = total + self.model_cfg.lambda_labelmix * lm
        out["total"] = total
        return out
