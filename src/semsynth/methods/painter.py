"""The class-mean painter: the floor every GAN must beat.

It fills each pixel with the mean colour of its label id over the training images (at the
training resolution, after the same resizing), optionally blurred with a Gaussian. It is
"trained" (one pass over the training split: :meth:`ClassMeanPainter.fit`) and evaluated
through the same commands as any method. It takes no noise, so all its samples of one label
map are identical (MS-SSIM 1, LPIPS 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F

from semsynth.methods.base import Generator, Method
from semsynth.registry import register_method
from semsynth.types import DatasetInfo


@dataclass(frozen=True)
class PainterConfig:
    """The ``model:`` section of a painter run.

    Attributes:
        blur_sigma: standard deviation in pixels of a Gaussian blur of the painted image
            (0 = none).
    """

    blur_sigma: float = 0.0


class ClassMeanPainter(Generator):
    """label map → per-id mean colour image.

    Buffers: ``sums (C, 3)`` float64 colour sums in [-1, 1] units, ``counts (C,)`` pixel
    counts; ids never seen in training are painted mid-grey (0).
    """

    def __init__(self, semantic_nc: int, blur_sigma: float = 0.0) -> None:
        super().__init__(None, semantic_nc)
        self.blur_sigma = float(blur_sigma)
        self.register_buffer("sums", torch.zeros(semantic_nc, 3, dtype=torch.float64))
        self.register_buffer("counts", torch.zeros(semantic_nc, dtype=torch.float64))

    @torch.no_grad()
    def accumulate(self, image: torch.Tensor, label: torch.Tensor) -> None:
        """Add a batch: image ``(B, 3, H, W)`` in [-1, 1], label ``(B, H, W)`` int64."""
        lab = label.reshape(-1)
        pix = image.permute(0, 2, 3, 1).reshape(-1, 3).to(torch.float64)
        self.sums.index_add_(0, lab, pix)
        self.counts += torch.bincount(lab, minlength=self.semantic_nc).to(torch.float64)

    def means(self) -> torch.Tensor:
        """``(C, 3)`` float32 mean colour per id in [-1, 1] (0 for unseen ids)."""
        return (self.sums / self.counts.clamp(min=1)[:, None]).to(torch.float32)

    def forward(self, label_onehot: torch.Tensor, z: torch.Tensor | None = None,
                seeds: Sequence[int] | None = None) -> torch.Tensor:
        """``(N, C, H, W)`` one-hot → ``(N, 3, H, W)`` in [-1, 1]; noise/seeds are ignored."""
        img = torch.einsum("nchw,ck->nkhw", label_onehot.float(), self.means().to(label_onehot.device))
        if self.blur_sigma > 0:
            r = max(1, int(3 * self.blur_sigma + 0.5))
            x = torch.arange(-r, r + 1, dtype=img.dtype, device=img.device)
            k = torch.exp(-0.5 * (x / self.blur_sigma) ** 2)
            k = k / k.sum()
            img = F.pad(img, (r, r, r, r), mode="replicate")
            img = F.conv2d(img, k.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
            img = F.conv2d(img, k.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)
        return img.clamp(-1, 1)


@register_method("painter")
class Painter(Method):
    """The class-mean painter as a method: no phases, fitted in one pass."""

    config_class = PainterConfig
    phases = ()

    @classmethod
    def build_generator(cls, model_cfg: PainterConfig, info: DatasetInfo, height: int, width: int) -> ClassMeanPainter:
        return ClassMeanPainter(info.semantic_nc, model_cfg.blur_sigma)

    def __init__(self, model_cfg: PainterConfig, info: DatasetInfo, height: int, width: int) -> None:
        super().__init__(model_cfg, info, height, width)
        self.set_networks(self.build_generator(model_cfg, info, height, width))

    def fit(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Accumulate mean colours over ``(image, label)`` batches (the training split)."""
        for image, label in batches:
            self.generator.accumulate(image, label)
