"""ESPNet (p=2, q=8): the pretrained segmenter used as the independent mIoU judge.

The network is ESPNet from Mehta et al., "ESPNet: Efficient Spatial Pyramid of Dilated
Convolutions for Semantic Segmentation", ECCV 2018. This module is the project's own
implementation; its parameter and buffer names match the state dicts released in the public
repository sacmehta/ESPNet (``pretrained/decoder/``; architecture in ``train/Model.py`` and
``test/Model.py``), so those files load with ``load_state_dict(strict=True)``.

Two released variants are supported (see ``shared/README.md``, section ``weights/``):

* ``"camvid"``: 12 output channels (11 CamVid classes + void). Its last decoder conv takes
  ``19 + 12 = 31`` channels: the upsampled RUM output concatenated with the 19-channel
  level-1 feature *after* its BatchNorm+PReLU (16 conv channels + 3 channels of the
  down-sampled input), as in ``train/Model.py``. Input 480×360, BGR, CamVid train statistics.
* ``"cityscapes"``: 20 output channels (19 train ids + background). Its last decoder conv takes
  ``16 + 20 = 36`` channels: the upsampled RUM output concatenated with the raw 16-channel
  level-1 conv output, as in ``test/Model.py``. Input 1024×512, BGR, Cityscapes statistics
  (``test/VisualizeResults.py``).

All up-sampling inside the network is learned (2×2 stride-2 ``ConvTranspose2d``), so input
sides must be divisible by 8; :class:`Segmenter` always feeds the network its native size.

Public API::

    ESPNet(num_outputs, p=2, q=8, skip="br")            # nn.Module, logits at input size
    load_espnet(dataset, weights_dir=None, device="cpu", batch_size=8) -> Segmenter
    Segmenter.predict(images) -> LongTensor (N, H_seg, W_seg)       # float RGB in [-1, 1]
    Segmenter.predict_uint8(images) -> LongTensor (N, H_seg, W_seg) # uint8 RGB (N, H, W, 3)
    Segmenter.logits(images_0_255) -> FloatTensor (N, C_out, H_seg, W_seg)

The Cityscapes label-id → train-id table lives in :mod:`semsynth.data.cityscapes_ids`.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from semsynth.data.cityscapes_ids import CITYSCAPES_CLASS_NAMES

__all__ = [
    "ESPNet",
    "ESPNetSpec",
    "ESPNET_SPECS",
    "Segmenter",
    "load_espnet",
    "default_weights_dir",
    "CAMVID_CLASS_NAMES",
]

_BN_EPS = 1e-3  # every BatchNorm of the released ESPNet uses eps = 1e-3


# --------------------------------------------------------------------------------------------
# Building blocks (names of the attributes follow the released state dict keys)
# --------------------------------------------------------------------------------------------


class _ConvBNAct(nn.Module):
    """k×k conv (no bias, "same" padding) → BatchNorm(eps 1e-3) → PReLU (per channel).

    Keys: ``conv.weight``, ``bn.*``, ``act.weight`` (``CBR`` in sacmehta/ESPNet).
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1) -> None:
        super().__init__()
        pad = (kernel - 1) // 2
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=pad, bias=False)
        self.bn = nn.BatchNorm2d(out_ch, eps=_BN_EPS)
        self.act = nn.PReLU(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class _BNAct(nn.Module):
    """BatchNorm(eps 1e-3) → PReLU. Keys: ``bn.*``, ``act.weight`` (``BR`` in the reference)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(ch, eps=_BN_EPS)
        self.act = nn.PReLU(ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(x))


class _Conv(nn.Module):
    """Plain bias-free conv with "same" padding scaled by the dilation. Key: ``conv.weight``."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        pad = (kernel - 1) // 2 * dilation
        self.conv = nn.Conv2d(
            in_ch, out_ch, kernel, stride=stride, padding=pad, dilation=dilation, bias=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class _SpatialPyramid(nn.Module):
    """Reduce → split → five parallel dilated 3×3 convs (d = 1, 2, 4, 8, 16) → hierarchical
    feature fusion (running sums of the d ≥ 2 branches) → concat.

    Shared by the ESP block and the strided ESP down-sampler. ``out_ch`` is split into
    ``n = out_ch // 5`` channels per branch and ``out_ch - 4n`` for the d=1 branch.
    """

    def _make_branches(self, in_ch: int, out_ch: int, reduce_kernel: int, stride: int) -> None:
        n = out_ch // 5
        n1 = out_ch - 4 * n
        self.c1 = _Conv(in_ch, n, reduce_kernel, stride)
        self.d1 = _Conv(n, n1, 3, 1, 1)
        self.d2 = _Conv(n, n, 3, 1, 2)
        self.d4 = _Conv(n, n, 3, 1, 4)
        self.d8 = _Conv(n, n, 3, 1, 8)
        self.d16 = _Conv(n, n, 3, 1, 16)

    def _pyramid(self, x: torch.Tensor) -> torch.Tensor:
        r = self.c1(x)
        s1 = self.d2(r)
        s2 = s1 + self.d4(r)
        s3 = s2 + self.d8(r)
        s4 = s3 + self.d16(r)
        return torch.cat([self.d1(r), s1, s2, s3, s4], 1)


class _ESPDown(_SpatialPyramid):
    """Strided ESP module (halves H and W): 3×3 stride-2 reduction, pyramid, BN, PReLU.

    ``DownSamplerB`` in the reference; keys ``c1``, ``d1``…``d16``, ``bn``, ``act``.
    """

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self._make_branches(in_ch, out_ch, reduce_kernel=3, stride=2)
        self.bn = nn.BatchNorm2d(out_ch, eps=_BN_EPS)
        self.act = nn.PReLU(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self._pyramid(x)))


class _ESPBlock(_SpatialPyramid):
    """ESP block: 1×1 reduction, pyramid, optional identity residual, BN + PReLU.

    ``DilatedParllelResidualBlockB`` in the reference; keys ``c1``, ``d1``…``d16``,
    ``bn.bn.*``, ``bn.act.weight``.
    """

    def __init__(self, in_ch: int, out_ch: int, residual: bool = True) -> None:
        super().__init__()
        self._make_branches(in_ch, out_ch, reduce_kernel=1, stride=1)
        self.bn = _BNAct(out_ch)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._pyramid(x)
        if self.residual:
            y = y + x
        return self.bn(y)


class _ImagePyramid(nn.Module):
    """``times`` successive 3×3 stride-2 average pools (padding 1, zero-padded cells counted):
    the input image projected to a feature map's resolution. No parameters."""

    def __init__(self, times: int) -> None:
        super().__init__()
        self.pool = nn.ModuleList(nn.AvgPool2d(3, stride=2, padding=1) for _ in range(times))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for p in self.pool:
            x = p(x)
        return x


class _ESPNetC(nn.Module):
    """The ESPNet-C encoder (output stride 8). Attribute names match the ``encoder.*`` keys.

    ``forward`` returns the intermediate features the decoder needs.
    """

    def __init__(self, num_outputs: int, p: int, q: int) -> None:
        super().__init__()
        self.level1 = _ConvBNAct(3, 16, 3, 2)
        self.sample1 = _ImagePyramid(1)
        self.sample2 = _ImagePyramid(2)
        self.b1 = _BNAct(16 + 3)
        self.level2_0 = _ESPDown(16 + 3, 64)
        self.level2 = nn.ModuleList(_ESPBlock(64, 64) for _ in range(p))
        self.b2 = _BNAct(128 + 3)
        self.level3_0 = _ESPDown(128 + 3, 128)
        self.level3 = nn.ModuleList(_ESPBlock(128, 128) for _ in range(q))
        self.b3 = _BNAct(256)
        self.classifier = _Conv(256, num_outputs, 1, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        l1 = self.level1(x)  # (N, 16, H/2, W/2)
        l1_cat = self.b1(torch.cat([l1, self.sample1(x)], 1))  # (N, 19, H/2, W/2)
        l2_0 = self.level2_0(l1_cat)  # (N, 64, H/4, W/4)
        l2 = l2_0
        for block in self.level2:
            l2 = block(l2)
        l2_cat = self.b2(torch.cat([l2, l2_0, self.sample2(x)], 1))  # (N, 131, H/4, W/4)
        l3_0 = self.level3_0(l2_cat)  # (N, 128, H/8, W/8)
        l3 = l3_0
        for block in self.level3:
            l3 = block(l3)
        l3_cat = self.b3(torch.cat([l3_0, l3], 1))  # (N, 256, H/8, W/8)
        return {
            "l1": l1,
            "l1_cat": l1_cat,
            "l2_cat": l2_cat,
            "l3_logits": self.classifier(l3_cat),
        }


def _up2(ch: int) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(ch, ch, 2, stride=2, padding=0, output_padding=0, bias=False)


class ESPNet(nn.Module):
    """ESPNet (encoder ESPNet-C + light-weight RUM decoder), Mehta et al., ECCV 2018.

    Source: sacmehta/ESPNet, ``train/Model.py`` (CamVid decoder: skip from the 19-channel
    level-1 feature after BR) and ``test/Model.py`` (Cityscapes decoder: skip from the raw
    16-channel level-1 conv output). State-dict keys are identical to the released files.

    Args:
        num_outputs: output channels C (CamVid: 12 = 11 classes + void; Cityscapes: 20 =
            19 train ids + background).
        p: ESP blocks at level 2 (2 for the released weights).
        q: ESP blocks at level 3 (8 for the released weights).
        skip: ``"br"`` (CamVid variant, last conv has 19 + C inputs) or ``"conv"``
            (Cityscapes variant, 16 + C inputs).

    Input: ``(N, 3, H, W)`` float32, BGR, normalised as ``((x - mean) / std) / 255`` with x in
    0-255; H and W divisible by 8. Output: ``(N, C, H, W)`` float32 logits.

    Raises:
        ValueError: unknown ``skip``, or (in ``forward``) H or W not divisible by 8.
    """

    def __init__(self, num_outputs: int, p: int = 2, q: int = 8, skip: str = "br") -> None:
        super().__init__()
        if skip not in ("br", "conv"):
            raise ValueError(f"skip must be 'br' (CamVid) or 'conv' (Cityscapes), got {skip!r}")
        c = num_outputs
        self.num_outputs = c
        self.skip = skip
        self.encoder = _ESPNetC(c, p, q)
        self.level3_C = _Conv(128 + 3, c, 1, 1)
        self.br = nn.BatchNorm2d(c, eps=_BN_EPS)
        self.conv = _ConvBNAct((19 if skip == "br" else 16) + c, c, 3, 1)
        self.up_l3 = nn.Sequential(_up2(c))
        self.combine_l2_l3 = nn.Sequential(_BNAct(2 * c), _ESPBlock(2 * c, c, residual=False))
        self.up_l2 = nn.Sequential(_up2(c), _BNAct(c))
        self.classifier = _up2(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` normalised BGR float → ``(N, C, H, W)`` logits (H, W % 8 == 0)."""
        h, w = x.shape[-2:]
        if h % 8 or w % 8:
            raise ValueError(f"ESPNet input sides must be divisible by 8, got {h}x{w}")
        f = self.encoder(x)
        l3 = self.up_l3(self.br(f["l3_logits"]))  # RUM: (N, C, H/4, W/4)
        l2 = self.level3_C(f["l2_cat"])  # (N, C, H/4, W/4)
        l2 = self.up_l2(self.combine_l2_l3(torch.cat([l2, l3], 1)))  # RUM: (N, C, H/2, W/2)
        skip = f["l1_cat"] if self.skip == "br" else f["l1"]
        return self.classifier(self.conv(torch.cat([l2, skip], 1)))  # (N, C, H, W)


# --------------------------------------------------------------------------------------------
# Released weights and their preprocessing
# --------------------------------------------------------------------------------------------

CAMVID_CLASS_NAMES: tuple[str, ...] = (
    "Sky", "Building", "Pole", "Road", "Pavement", "Tree",
    "SignSymbol", "Fence", "Car", "Pedestrian", "Bicyclist",
)  # fmt: skip



@dataclass(frozen=True)
class ESPNetSpec:
    """Everything that describes one released ESPNet judge.

    Attributes:
        filename: weights file name inside the weights folder.
        sha256_head / sha256_tail: first 8 / last 4 hex digits of the file's sha256
            (``shared/README.md``).
        num_outputs: network output channels (real classes + one void/background channel).
        num_classes: real classes (the argmax is taken over channels ``0 .. num_classes-1``).
        skip: decoder variant of :class:`ESPNet` (``"br"`` CamVid, ``"conv"`` Cityscapes).
        input_size: ``(W, H)`` the network is run at.
        mean_bgr / std_bgr: per-channel statistics in 0-255 BGR.
        class_names: names of the real classes, in id order.
    """

    filename: str
    sha256_head: str
    sha256_tail: str
    num_outputs: int
    num_classes: int
    skip: str
    input_size: tuple[int, int]
    mean_bgr: tuple[float, float, float]
    std_bgr: tuple[float, float, float]
    class_names: tuple[str, ...]


ESPNET_SPECS: dict[str, ESPNetSpec] = {
    # shared/README.md: CamVid train statistics, 0-255 BGR.
    "camvid": ESPNetSpec(
        filename="espnet_camvid_p2q8.pth",
        sha256_head="7d354a25",
        sha256_tail="01af",
        num_outputs=12,
        num_classes=11,
        skip="br",
        input_size=(480, 360),
        mean_bgr=(109.88, 107.96, 104.54),
        std_bgr=(71.84, 72.33, 69.50),
        class_names=CAMVID_CLASS_NAMES,
    ),
    # sacmehta/ESPNet test/VisualizeResults.py: Cityscapes statistics, 0-255 BGR, 1024x512.
    "cityscapes": ESPNetSpec(
        filename="espnet_cityscapes_p2q8.pth",
        sha256_head="343b0e77",
        sha256_tail="763e",
        num_outputs=20,
        num_classes=19,
        skip="conv",
        input_size=(1024, 512),
        mean_bgr=(72.3923111, 82.90893555, 73.15840149),
        std_bgr=(45.3192215, 46.15289307, 44.91483307),
        class_names=CITYSCAPES_CLASS_NAMES,
    ),
}


def default_weights_dir() -> Path:
    """The weights folder: ``$SEMSYNTH_WEIGHTS`` if set, else ``<repo>/../shared/weights``.

    ``<repo>`` is the repository root holding ``src/semsynth`` (this file's ``parents[4]``).
    """
    env = os.environ.get("SEMSYNTH_WEIGHTS")
    if env:
        return Path(os.path.expanduser(env))
    return (Path(__file__).resolve().parents[4].parent / "shared" / "weights").resolve()


def _check_sha256(path: Path, head: str, tail: str) -> None:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
    if not (digest.startswith(head) and digest.endswith(tail)):
        raise ValueError(
            f"weights file {path} has sha256 {digest}, expected {head}…{tail}: "
            "wrong or corrupted file"
        )


class Segmenter:
    """A pretrained ESPNet judge with its preprocessing: images in, class maps out.

    Build it with :func:`load_espnet`. The network is in eval mode and is run under
    ``torch.no_grad``. Preprocessing (``shared/README.md``; sacmehta/ESPNet
    ``test/VisualizeResults.py``): RGB 0-255 float → bilinear resize (``align_corners=False``,
    no antialiasing; skipped when the size already equals :attr:`input_size`) → BGR →
    ``((x - mean) / std) / 255`` → network → argmax over the :attr:`num_classes` real classes
    (the void / background channel is never predicted).

    Attributes:
        dataset: ``"camvid"`` or ``"cityscapes"``.
        spec: the :class:`ESPNetSpec`.
        net: the :class:`ESPNet` module.
        input_size: ``(W, H)``: (480, 360) CamVid, (1024, 512) Cityscapes.
        num_classes: real classes: 11 CamVid, 19 Cityscapes.
        class_names: tuple of the real classes' names.
        device: torch device the network lives on.
        batch_size: images per forward pass in :meth:`predict` / :meth:`predict_uint8`.
    """

    def __init__(
        self, dataset: str, net: ESPNet, spec: ESPNetSpec, device="cpu", batch_size: int = 8
    ) -> None:
        self.dataset = dataset
        self.spec = spec
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.input_size: tuple[int, int] = spec.input_size
        self.num_classes: int = spec.num_classes
        self.class_names: tuple[str, ...] = spec.class_names
        self.batch_size = int(batch_size)
        self._mean = torch.tensor(spec.mean_bgr, dtype=torch.float32, device=self.device)
        self._std = torch.tensor(spec.std_bgr, dtype=torch.float32, device=self.device)

    # -- core -----------------------------------------------------------------------------

    @torch.no_grad()
    def logits(self, images_0_255: torch.Tensor) -> torch.Tensor:
        """Network logits for RGB images with values in 0-255 (one forward pass, no batching).

        Args:
            images_0_255: ``(N, 3, H, W)`` float RGB in ``[0, 255]``, any H, W, any device.

        Returns:
            ``(N, C_out, H_seg, W_seg)`` float32 logits on :attr:`device`, with
            ``(W_seg, H_seg) = input_size`` and ``C_out = num_classes + 1`` (last channel:
            void / background).

        Raises:
            ValueError: input not of shape ``(N, 3, H, W)``.
        """
        x = images_0_255
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"images must be (N, 3, H, W), got {tuple(x.shape)}")
        x = x.to(self.device, torch.float32)
        w, h = self.input_size
        if tuple(x.shape[-2:]) != (h, w):
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
        x = x.flip(1)  # RGB -> BGR
        x = (x - self._mean.view(1, 3, 1, 1)) / self._std.view(1, 3, 1, 1) / 255.0
        return self.net(x)

    def _predict_batches(self, images_0_255: torch.Tensor, batch_size: int | None) -> torch.Tensor:
        bs = int(batch_size or self.batch_size)
        out = []
        for i in range(0, images_0_255.shape[0], bs):
            lg = self.logits(images_0_255[i : i + bs])
            out.append(lg[:, : self.num_classes].argmax(1).cpu())
        if not out:
            w, h = self.input_size
            return torch.empty((0, h, w), dtype=torch.int64)
        return torch.cat(out, 0)

    # -- public entry points --------------------------------------------------------------

    def predict(self, images: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """Class maps for generated (or any float) images.

        Args:
            images: ``(N, 3, H, W)`` float RGB in ``[-1, 1]``, any resolution, any device.
                Converted to 0-255 as ``(x + 1) * 127.5`` (not rounded, not clamped), then
                resized bilinearly to :attr:`input_size` if the size differs.
            batch_size: images per forward pass (default :attr:`batch_size`).

        Returns:
            ``(N, H_seg, W_seg)`` int64 (CPU) class ids in ``[0, num_classes)``.

        Raises:
            ValueError: wrong shape, or not a floating-point tensor.
        """
        if not torch.is_tensor(images) or not images.is_floating_point():
            raise ValueError("predict() takes a float tensor in [-1, 1]; use predict_uint8()")
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (N, 3, H, W), got {tuple(images.shape)}")
        return self._predict_batches((images.float() + 1.0) * 127.5, batch_size)

    def predict_uint8(self, images, batch_size: int | None = None) -> torch.Tensor:
        """Class maps for real 8-bit images, fed exactly (no [-1, 1] round trip).

        Args:
            images: uint8 RGB, ``(N, H, W, 3)`` or one ``(H, W, 3)`` image; numpy array or
                torch tensor. Images already at :attr:`input_size` are not resampled.
            batch_size: images per forward pass (default :attr:`batch_size`).

        Returns:
            ``(N, H_seg, W_seg)`` int64 (CPU) class ids in ``[0, num_classes)``.

        Raises:
            ValueError: not uint8, or not ``(N, H, W, 3)`` / ``(H, W, 3)``.
        """
        t = torch.from_numpy(np.array(images)) if not torch.is_tensor(images) else images
        if t.dtype != torch.uint8:
            raise ValueError(f"predict_uint8() takes uint8 images, got {t.dtype}")
        if t.dim() == 3:
            t = t.unsqueeze(0)
        if t.dim() != 4 or t.shape[-1] != 3:
            raise ValueError(f"images must be (N, H, W, 3) uint8 RGB, got {tuple(t.shape)}")
        bs = int(batch_size or self.batch_size)
        out = []
        for i in range(0, t.shape[0], bs):
            chunk = t[i : i + bs].permute(0, 3, 1, 2).to(self.device, torch.float32)
            out.append(self._predict_batches(chunk, bs))
        if not out:
            w, h = self.input_size
            return torch.empty((0, h, w), dtype=torch.int64)
        return torch.cat(out, 0)

    def __repr__(self) -> str:
        return (
            f"Segmenter(dataset={self.dataset!r}, input_size={self.input_size}, "
            f"num_classes={self.num_classes}, device={str(self.device)!r})"
        )


def load_espnet(
    dataset: str,
    weights_dir: str | os.PathLike | None = None,
    device="cpu",
    batch_size: int = 8,
    check_sha256: bool = True,
) -> Segmenter:
    """Load a released ESPNet (p=2, q=8) judge, strictly, into a :class:`Segmenter`.

    Args:
        dataset: ``"camvid"`` (``espnet_camvid_p2q8.pth``) or ``"cityscapes"``
            (``espnet_cityscapes_p2q8.pth``).
        weights_dir: folder holding the weights; ``None`` → :func:`default_weights_dir`
            (``$SEMSYNTH_WEIGHTS``, else ``<repo>/../shared/weights``).
        device: torch device for the network.
        batch_size: default images per forward pass.
        check_sha256: verify the file's sha256 against the README's head/tail digits.

    Returns:
        The :class:`Segmenter` in eval mode.

    Raises:
        ValueError: unknown ``dataset``, or sha256 mismatch (message names the file).
        FileNotFoundError: the weights file is missing (message gives its full path).
        RuntimeError: the state dict does not load strictly.
    """
    key = dataset.lower()
    if key not in ESPNET_SPECS:
        raise ValueError(f"unknown ESPNet dataset {dataset!r}; choose from {sorted(ESPNET_SPECS)}")
    spec = ESPNET_SPECS[key]
    folder = Path(weights_dir) if weights_dir is not None else default_weights_dir()
    path = Path(os.path.expanduser(str(folder))) / spec.filename
    if not path.is_file():
        raise FileNotFoundError(
            f"ESPNet {key} weights not found: {path} (set SEMSYNTH_WEIGHTS or pass weights_dir; "
            "the file is shared/weights/" + spec.filename + ", see shared/README.md)"
        )
    if check_sha256:
        _check_sha256(path, spec.sha256_head, spec.sha256_tail)
    state = torch.load(path, map_location="cpu", weights_only=True)
    net = ESPNet(spec.num_outputs, p=2, q=8, skip=spec.skip)
    net.load_state_dict(state, strict=True)
    return Segmenter(key, net, spec, device=device, batch_size=batch_size)
