"""One Sampler for the CLI, the metrics and the web editor (as diffusers' pipelines do).

A :class:`Sampler` wraps a trained (EMA) generator in eval mode with refreshed BatchNorm
statistics, and turns label maps into images:

* many images per label map: one per seed (global noise, :func:`semsynth.noise.noise_from_seeds`);
* local re-sampling (OASIS Sec. 4): the noise of ``base_seed`` everywhere except in a
  region (a class, or a mask), which takes the noise of each new seed.

The same seed gives the same noise on every device (drawn per sample on the CPU), and the
same image whatever the batch size (the generator runs in eval mode, BatchNorm uses its
running statistics; tested on the CPU). On another device (CUDA) the image agrees with the
CPU's only up to floating-point rounding of the convolutions — not bit for bit, and not
tested here (no GPU in CI).
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from semsynth.labels import label_input
from semsynth.noise import class_region, local_noise, noise_from_seeds
from semsynth.types import DataError, DatasetInfo, SemsynthError


class Sampler:
    """Label maps → images with a trained generator.

    Args:
        generator: a :class:`semsynth.methods.base.Generator`; put in eval mode.
        info: the label space it was trained on.
        height, width: its output size.
        device: where it runs.
    """

    def __init__(self, generator: nn.Module, info: DatasetInfo, height: int, width: int,
                 device: torch.device | str = "cpu") -> None:
        self.generator = generator.eval().to(device)
        self.info = info
        self.height, self.width = height, width
        self.device = torch.device(device)
        self.z_dim = int(generator.z_dim)
        #: the generator's noise kind (:data:`semsynth.methods.base.NOISE_KINDS`)
        self.noise = generator.noise
        #: images a noise-free generator makes at once (CRN's k; 1 otherwise): seed i → output i mod k.
        self.num_outputs = int(generator.num_outputs)

    @property
    def deterministic(self) -> bool:
        """True when every seed gives the same image of a label map (no noise, one output)."""
        return self.noise == "none" and self.num_outputs == 1

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device = "cpu",
                        use_ema: bool = True) -> "Sampler":
        """Build from a training checkpoint or an export folder (:mod:`semsynth.model.export`).

        ``use_ema=True`` (default): the EMA generator, whose BatchNorm statistics the
        training loop refreshed on training batches just before writing the checkpoint.
        ``use_ema=False``: the raw generator with the BatchNorm running statistics it
        accumulated (momentum 0.1) during its own training forward passes — nothing is
        refreshed here. An export folder holds one generator (``"ema"`` in its
        ``export.json`` says which) and is loaded as is.

        Raises:
            ValueError: ``use_ema=False`` with an export folder.
            FileNotFoundError, ConfigError: missing or invalid checkpoint, or NaN/inf
                generator weights (names the file).
        """
        from semsynth.model.checkpoint import load_trained

        return cls.from_trained(load_trained(path, use_ema=use_ema), device)

    @classmethod
    def from_trained(cls, model, device: str | torch.device = "cpu") -> "Sampler":
        """Wrap a :class:`semsynth.model.checkpoint.TrainedModel` (keeps its ``config`` and
        ``checkpoint_step``)."""
        sampler = cls(model.generator, model.info, model.cfg.data.height, model.cfg.data.width, device)
        sampler.config = model.cfg
        sampler.checkpoint_step = model.step
        return sampler

    # ------------------------------------------------------------------ labels
    def prepare_label(self, label: torch.Tensor | np.ndarray, source: str = "<label map>") -> torch.Tensor:
        """Validate ids and resize (nearest) a label map to the generator's size.

        Args:
            label: ``(H, W)`` or ``(N, H, W)`` integer ids, any size.
            source: file name for error messages.

        Returns:
            ``(N, height, width)`` int64 on the sampler's device.

        Raises:
            DataError: ids the checkpoint's label space does not know (names ``source``
                and the ids).
        """
        lab = torch.as_tensor(np.asarray(label) if not isinstance(label, torch.Tensor) else label)
        lab = lab.to(torch.int64)
        if lab.dim() == 2:
            lab = lab[None]
        if lab.dim() != 3:
            raise DataError(f"{source}: label map must be (H,W) or (N,H,W), got {tuple(lab.shape)}")
        bad = torch.unique(lab[(lab < 0) | (lab >= self.info.semantic_nc)])
        if bad.numel():
            raise DataError(
                f"{source}: label ids {bad.tolist()[:10]} unknown to this checkpoint "
                f"({self.info.name}: ids 0-{self.info.semantic_nc - 1})"
            )
        if tuple(lab.shape[-2:]) != (self.height, self.width):
            lab = F.interpolate(lab[:, None].float(), size=(self.height, self.width), mode="nearest")[:, 0].long()
        return lab.to(self.device)

    # ----------------------------------------------------------------- sampling
    @torch.no_grad()
    def generate(self, label: torch.Tensor, seeds: Sequence[int] | None = None,
                 z: torch.Tensor | None = None, batch_size: int = 16,
                 edges: torch.Tensor | None = None) -> torch.Tensor:
        """Images for a batch of label maps.

        Args:
            label: ``(N, H, W)`` int64 at the generator's size (see :meth:`prepare_label`).
            edges: ``(N, 1, H, W)`` instance-edge maps, for a checkpoint trained with
                ``data.instance_edges`` (the evaluation passes the dataset's); ``None``: the
                label maps' class boundaries (a painted or loaded label map has no instance
                map: each class region counts as one instance). Ignored otherwise.
            seeds: one seed per label map (default ``0..N-1``) — ignored if ``z`` is given.
                For a generator with ``k`` fixed outputs and no noise (CRN), seed ``i``
                selects output ``i mod k``; for other noise-free generators seeds are unused.
            z: ``(N, z_dim)`` or ``(N, z_dim, H, W)`` noise.
            batch_size: label maps per forward pass. It changes only float32 rounding (a batched
                convolution sums in another order): uint8 pixels may move by 1 of 255 at a few
                values in a million (measured in ``tests/test_web.py``).

        Returns:
            ``(N, 3, H, W)`` float32 in [-1, 1], on the CPU.
        """
        n = label.shape[0]
        if seeds is None and z is None:
            seeds = list(range(n))
        if seeds is not None and len(seeds) != n:
            raise ValueError(f"{len(seeds)} seeds for {n} label maps")
        if z is not None and self.noise == "none":
            raise ValueError("this generator takes no noise: pass seeds, not z")
        out = []
        for s in range(0, n, batch_size):
            e = None if edges is None else edges[s:s + batch_size].to(self.device)
            onehot = label_input(label[s:s + batch_size].to(self.device), self.info, e)
            if z is not None:
                img = self.generator(onehot, z[s:s + batch_size].to(self.device))
            else:  # per-sample noise from the seeds; CRN: output seed mod k; deterministic: unused
                img = self.generator(onehot, seeds=list(seeds[s:s + batch_size]))
            out.append(img.float().cpu())
        return torch.cat(out)

    def sample_many(self, label: torch.Tensor, seeds: Sequence[int], batch_size: int = 16,
                    edges: torch.Tensor | None = None) -> torch.Tensor:
        """``len(seeds)`` images of one label map ``(1, H, W)`` or ``(H, W)`` → ``(K, 3, H, W)``
        (``edges``: its ``(1, H, W)`` or ``(1, 1, H, W)`` instance-edge map, see :meth:`generate`)."""
        lab = label if label.dim() == 3 else label[None]
        e = None
        if edges is not None:
            e = edges.reshape(1, 1, *edges.shape[-2:]).expand(len(seeds), -1, -1, -1)
        return self.generate(lab.expand(len(seeds), -1, -1), seeds=list(seeds), batch_size=batch_size, edges=e)

    @torch.no_grad()
    def posterior_latent(self, image: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        """The official SPADE/CC-FPSE test latent (``models/pix2pix_model.py``, ``inference``):
        ``z = μ + ε·σ`` of the encoded photos, ``ε`` drawn from each image's seed
        (:func:`semsynth.noise.noise_from_seeds`).

        Args:
            image: ``(N, 3, H, W)`` float in [-1, 1] (the real photos of the label maps).
            seeds: one per image.

        Returns:
            ``(N, z_dim)`` float32 on the sampler's device.

        Raises:
            DataError: the generator has no image encoder; ValueError: ``len(seeds) != N``.
        """
        if not self.generator.has_encoder:
            raise DataError("the encoded-photo latent needs an image encoder (SPADE or CC-FPSE with "
                            "model.generator.use_vae: true); this checkpoint has none")
        if len(seeds) != image.shape[0]:
            raise ValueError(f"{len(seeds)} seeds for {image.shape[0]} images")
        from semsynth.noise import noise_from_seeds

        out = []
        for s in range(0, image.shape[0], 16):
            mu, logvar = self.generator.encode(image[s:s + 16].float().to(self.device))
            eps = noise_from_seeds(list(seeds[s:s + 16]), mu.shape[1], self.device)
            out.append(mu + eps * torch.exp(0.5 * logvar))
        return torch.cat(out)

    def region_resampling_unavailable(self) -> str | None:
        """Why this generator cannot re-sample a region (``None`` if it can).

        Local re-sampling needs per-pixel noise (OASIS's 3D noise). A generator without
        noise (SPADE without its encoder, CRN) or with one latent vector per image (SPADE's
        encoder latent, through a linear layer) cannot.
        """
        if self.noise == "none" and self.num_outputs > 1:
            return (f"this generator (CRN) takes no noise: it makes {self.num_outputs} fixed images per label map "
                    f"(seed i gives output i mod {self.num_outputs}), so no region can be re-sampled on its own")
        if self.noise == "none":
            return ("this generator takes no noise (a deterministic method, e.g. SPADE without its encoder): "
                    "there is nothing to re-sample locally")
        if self.noise != "spatial":
            return ("this generator's noise is one vector per image (SPADE's encoder latent, through a linear "
                    "layer): a region cannot be re-sampled on its own; local re-sampling needs OASIS's 3D noise")
        return None

    @torch.no_grad()
    def style_latent(self, image: torch.Tensor | np.ndarray, source: str = "<style image>") -> torch.Tensor:
        """Latent of a reference image for style-guided synthesis (SPADE or CC-FPSE with the
        VAE encoder).

        The latent is the encoder's mean μ (no sampling), so the same reference always gives
        the same images: ``generate(label, z=style_latent(img).expand(N, -1))``. A uint8
        photo is first resized (bicubic, antialiased: the data pipeline's
        :func:`semsynth.data.transforms.resize_image`) to the generator's size, the size of
        the images the encoder saw in training.

        Args:
            image: ``(H, W, 3)`` uint8 RGB of any size, or ``(3, H, W)`` / ``(1, 3, H, W)``
                float in [-1, 1] at the generator's size.
            source: file name for error messages.

        Returns:
            ``(1, z_dim)`` float32 on the sampler's device.

        Raises:
            DataError: the generator has no image encoder, or the image has the wrong shape.
        """
        if not self.generator.has_encoder:
            raise DataError(f"{source}: style-guided synthesis needs an image encoder (SPADE or CC-FPSE "
                            "with model.generator.use_vae: true); this checkpoint has none")
        from semsynth.data.transforms import resize_image

        x = torch.as_tensor(np.array(image) if not isinstance(image, torch.Tensor) else image)
        if x.dtype == torch.uint8:
            if x.dim() != 3 or x.shape[-1] != 3:
                raise DataError(f"{source}: a style image must be (H, W, 3) RGB, got {tuple(x.shape)}")
            x = torch.from_numpy(resize_image(x.numpy(), self.height, self.width).copy())
            x = x.permute(2, 0, 1).float() / 127.5 - 1
        if x.dim() == 3:
            x = x[None]
        if x.dim() != 4 or x.shape[:2] != (1, 3):
            raise DataError(f"{source}: a style image must be one RGB image, got {tuple(x.shape)}")
        mu, _ = self.generator.encode(x.float().to(self.device))
        return mu

    def region(self, label: torch.Tensor, class_id: int | None = None,
               mask: torch.Tensor | np.ndarray | None = None, source: str = "<region>") -> torch.Tensor:
        """The region to re-sample: the pixels of ``class_id``, the True pixels of ``mask``,
        or (both given) their intersection.

        Args:
            label: ``(H, W)`` or ``(1, H, W)`` int64 at the generator's size.
            class_id: a label id of this checkpoint's label space.
            mask: ``(h, w)`` bool (or 0/non-zero) array of any size; resized (nearest) to
                the generator's size.
            source: name used in error messages (a file name).

        Returns:
            ``(height, width)`` bool on the sampler's device (may be empty: the caller
            decides whether that is an error).

        Raises:
            DataError: neither given, a label map that is not one ``(H, W)`` map at the
                generator's size, a class id outside the label space, or a mask that is not
                2-D (names ``source`` and the value).
        """
        if label.dim() == 3 and label.shape[0] == 1:
            label = label[0]
        if tuple(label.shape) != (self.height, self.width):
            raise DataError(f"{source}: region needs one ({self.height}, {self.width}) label map, "
                            f"got {tuple(label.shape)} (see prepare_label)")
        lab = label
        if class_id is None and mask is None:
            raise DataError(f"{source}: give a class id, a mask, or both")
        region = torch.ones(self.height, self.width, dtype=torch.bool, device=self.device)
        if class_id is not None:
            if not 0 <= int(class_id) < self.info.semantic_nc:
                raise DataError(f"{source}: class {class_id} is not an id of {self.info.name} "
                                f"(0-{self.info.semantic_nc - 1})")
            region &= class_region(lab.to(self.device), int(class_id))
        if mask is not None:
            m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask)
            if m.dim() != 2:
                raise DataError(f"{source}: a mask must be (H, W), got {tuple(m.shape)}")
            m = F.interpolate((m != 0)[None, None].float(), size=(self.height, self.width), mode="nearest")
            region &= (m[0, 0] > 0.5).to(self.device)
        return region

    def resample_region(self, label: torch.Tensor, region: torch.Tensor, base_seed: int,
                        seeds: Sequence[int], batch_size: int = 16) -> torch.Tensor:
        """Local re-sampling: keep ``base_seed``'s noise outside ``region``, re-roll inside.

        Args:
            label: ``(H, W)`` or ``(1, H, W)`` int64 at the generator's size.
            region: ``(H, W)`` bool, True where the noise takes each of ``seeds``.
            base_seed: seed of the noise outside the region.
            seeds: one output image per seed.

        Returns:
            ``(len(seeds), 3, H, W)`` float32 in [-1, 1].

        Raises:
            ValueError: a generator without noise, or whose noise is not spatial (SPADE).
        """
        lab = label if label.dim() == 3 else label[None]
        k = len(seeds)
        why = self.region_resampling_unavailable()
        if why:
            raise ValueError(why)
        reg = region.to(torch.bool).reshape(1, *lab.shape[-2:]).expand(k, -1, -1).cpu()
        base = noise_from_seeds([base_seed] * k, self.z_dim)
        new = noise_from_seeds(list(seeds), self.z_dim)
        z = local_noise(base, reg, new)
        return self.generate(lab.expand(k, -1, -1), z=z, batch_size=batch_size)


def read_mask_png(path: str | os.PathLike) -> np.ndarray:
    """Read a region mask: any PNG/JPEG. With an alpha channel (a layer painted on a
    transparent canvas), True where alpha > 0; otherwise True where the grey-converted
    pixel is non-zero.

    Returns:
        ``(H, W)`` bool at the file's own size (:meth:`Sampler.region` resizes it).

    Raises:
        DataError: unreadable file, or a mask with no non-zero pixel (names the file).
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            if "A" in im.getbands() or (im.mode == "P" and "transparency" in im.info):
                arr = np.asarray(im.convert("RGBA"))[..., 3] > 0
            else:
                arr = np.asarray(im.convert("L")) > 0
    except OSError as exc:
        raise DataError(f"{path}: cannot read mask ({exc})") from None
    if not arr.any():
        raise DataError(f"{path}: the mask is empty (no non-zero pixel)")
    return arr


def read_label_png(path: str | os.PathLike, info: DatasetInfo) -> np.ndarray:
    """Read a label PNG of ``info``'s dataset (grey or palette mode: pixel values are the
    dataset's raw label values, mapped to ids as its loader does) → ``(H, W)`` int64.

    Raises:
        DataError: unreadable file, a colour image, or values the dataset does not know
            (names the file and the values).
    """
    from semsynth.data import label_lut, read_label

    try:
        lut = label_lut(info.name)
    except SemsynthError:  # a dataset unknown here (third-party): values are ids
        lut = None
    return read_label(path, lut, num_ids=info.semantic_nc, name=info.name)
