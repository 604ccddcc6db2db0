"""One evaluation protocol for every method: FID, mIoU (ESPNet judge), diversity.

``evaluate_checkpoint`` generates one image per label map of a split with the checkpoint's
EMA generator (BatchNorm statistics refreshed when the checkpoint was written) at the
training resolution, with fixed per-image seeds (image ``i`` uses seed ``eval.seed + i``),
and computes:

* **FID** (:mod:`semsynth.eval.fid`): against the split's real images resized (bicubic) to
  the same resolution; real statistics are cached per (dataset, split, resolution, count).
* **KID** (:func:`semsynth.eval.fid.kernel_inception_distance`): the same Inception
  features, unbiased MMD² against the split's real images (cached features); reported as
  ``kid`` with ``kid_std`` over subsets. Use it next to FID when the number of images is
  small (FID's bias at 101 images is over 100 points) and whenever a model was trained
  with ImageNet features (a pretrained discriminator can lower Inception-based scores
  without a visible gain: Kynkäänniemi et al., ICLR 2023) — then read the ESPNet mIoU and
  the samples as the independent figures.
* **mIoU** (:mod:`semsynth.eval.miou`): the dataset's independent ESPNet judge segments the
  generated images upsampled (bilinear) to its input size; one confusion matrix over the
  split against the full-resolution ground truth, don't-care pixels excluded. Datasets
  without an offline judge (ADE20K, COCO-Stuff, Stanford Background, folders) get no mIoU,
  and the result says why (``absent``).
* **Diversity** (:mod:`semsynth.eval.diversity`): for the first ``M`` label maps, ``K``
  samples with different seeds; mean pairwise MS-SSIM (lower = more diverse) and LPIPS-VGG.

``evaluate_real`` runs the same pipeline on the real images (the ceiling for mIoU): resized
to the training resolution and treated exactly as generated images, or, with ``native``,
fed to the judge untouched at their own resolution. Its FID compares the train split with
the evaluated split.

Model selection uses the val split only; final numbers belong to a split never used for
selection (for CamVid, the test split, which is not distributed with this project's data).
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from semsynth.config import Config
from semsynth.eval.common import MetricUnavailable, cache_dir
from semsynth.types import DatasetInfo, SemsynthError

ALL_METRICS = ("fid", "kid", "miou", "diversity")
# Dataset name -> ESPNet judge name (see shared/README.md); others have no offline judge.
JUDGES = {"camvid": "camvid", "cityscapes": "cityscapes"}
NO_JUDGE_REASON = (
    "no pretrained segmenter for {name} is available offline (the papers' judges for ADE20K "
    "and COCO-Stuff, UperNet101 and DeepLab-v2, are not distributed with this project)"
)


def parse_metrics(text: str) -> tuple[str, ...]:
    """``"fid,miou"`` → ``("fid", "miou")``; ValueError naming an unknown metric."""
    names = tuple(m.strip() for m in text.split(",") if m.strip())
    bad = [m for m in names if m not in ALL_METRICS]
    if bad or not names:
        raise ValueError(f"unknown metrics {bad or text!r}; choose from {', '.join(ALL_METRICS)}")
    return names


def _stack(items: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.stack(list(items)) if items else torch.empty(0)


def split_items(dataset, limit: int | None) -> tuple[list[int], torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The first ``limit`` pairs (sorted by name) at the training resolution.

    Returns:
        indices, images ``(N, 3, H, W)`` float in [-1, 1], labels ``(N, H, W)`` int64, and
        the instance-edge maps ``(N, 1, H, W)`` of a dataset read with
        ``data.instance_edges`` (else ``None``).
    """
    n = len(dataset) if limit is None else min(limit, len(dataset))
    idx = list(range(n))
    items = [dataset[i] for i in idx]
    edges = _stack([it[2] for it in items]) if dataset.info.instance_edges else None
    return idx, _stack([it[0] for it in items]), _stack([it[1] for it in items]), edges


def split_images(dataset, limit: int | None) -> tuple[list[int], torch.Tensor, torch.Tensor]:
    """:func:`split_items` without the edge maps: indices, images, labels."""
    return split_items(dataset, limit)[:3]


def _photos_only(data_cfg):
    """``data_cfg`` without ``instance_edges``: the real-image statistics and scores read the
    photos and label maps only (no instance maps read, no edge maps computed)."""
    return dataclasses.replace(data_cfg, instance_edges=False)


def _real_set(cfg: Config, split: str, limit: int | None):
    """``(dataset, count, cache key)`` of the first ``limit`` real pairs of ``split``."""
    from semsynth.data import build_dataset

    ds = build_dataset(_photos_only(cfg.data), split, train=False, seed=cfg.seed)
    n = len(ds) if limit is None else min(limit, len(ds))
    key = {"dataset": cfg.data.dataset, "root": str(Path(ds.root).resolve()) if hasattr(ds, "root") else "",
           "split": split, "height": cfg.data.height, "width": cfg.data.width, "count": n,
           "load_size": f"{cfg.data.load_height}x{cfg.data.load_width}"}
    return ds, n, key


def real_fid_stats(cfg: Config, split: str, limit: int | None, device: torch.device):
    """Cached Inception statistics of a split's real images at the training resolution.

    Returns:
        ``(mu (2048,), sigma (2048, 2048))`` float64.
    """
    from semsynth.eval.fid import RealStatsCache, feature_stats

    _, n, key = _real_set(cfg, split, limit)

    def compute():  # from the cached features (one Inception pass serves FID and KID)
        return feature_stats(real_features(cfg, split, n, device))

    return RealStatsCache(cache_dir()).get_or_compute(key, compute)


def real_features(cfg: Config, split: str, limit: int | None, device: torch.device) -> np.ndarray:
    """Cached Inception pool3 features ``(N, 2048)`` float64 of a split's real images at the
    training resolution (the first ``limit`` pairs sorted by name), for KID."""
    from semsynth.eval.fid import RealStatsCache, inception_features, load_inception

    ds, n, key = _real_set(cfg, split, limit)

    def compute():
        _, images, _ = split_images(ds, n)
        return inception_features(images, load_inception(device), device=device)

    return RealStatsCache(cache_dir()).get_or_compute_features(key, compute)


def fid_of(images: torch.Tensor, real_stats, device: torch.device) -> float:
    """FID of generated ``(N, 3, H, W)`` images in [-1, 1] against real statistics."""
    from semsynth.eval.fid import feature_stats, frechet_distance, inception_features, load_inception

    mu, sigma = feature_stats(inception_features(images, load_inception(device), device=device))
    return float(frechet_distance(mu, sigma, *real_stats))


def load_judge(info: DatasetInfo, device: torch.device):
    """The dataset's ESPNet judge.

    Raises:
        MetricUnavailable: no judge for this dataset, missing weights, or a judge whose
            classes do not match the dataset's.
    """
    from semsynth.eval.segmenters.espnet import load_espnet

    judge = JUDGES.get(info.name)
    if judge is None:
        raise MetricUnavailable(NO_JUDGE_REASON.format(name=info.name))
    try:
        seg = load_espnet(judge, device=device)
    except FileNotFoundError as exc:
        raise MetricUnavailable(f"mIoU judge weights missing: {exc}") from None
    expected = info.num_classes if info.name != "cityscapes" else 19
    if seg.num_classes != expected:
        raise MetricUnavailable(f"judge {judge} has {seg.num_classes} classes, dataset {info.name} {expected}")
    return seg


def judge_labels(info: DatasetInfo, label: np.ndarray) -> tuple[np.ndarray, int | None]:
    """Ground truth in the judge's ids: ``(label, ignore_index)`` (Cityscapes labelIds →
    train ids; Cityscapes read with ``label_ids: train`` (20 ids) → void 19 becomes 255)."""
    if info.name == "cityscapes" and info.semantic_nc == 20:  # train-id space: 19 = void
        return np.where(np.asarray(label) == 19, 255, np.asarray(label)).astype(np.int64), 255
    if info.name == "cityscapes":
        from semsynth.data.cityscapes_ids import cityscapes_label_to_train_id

        return cityscapes_label_to_train_id(label), 255
    return label, info.ignore_index


def miou_of(images, dataset, indices: Sequence[int], info: DatasetInfo, device: torch.device) -> dict:
    """mIoU / pixel accuracy / per-class IoU of images judged against full-resolution labels.

    Args:
        images: a list of ``(3, H, W)`` float [-1, 1] tensors or ``(H, W, 3)`` uint8 arrays,
            one per index (any resolution; upsampled bilinearly to the judge's input size).
        dataset: provides ``load_ground_truth(i)`` (full-resolution ground truth).
        indices: dataset indices of the images.
    """
    from semsynth.eval.miou import segment_and_score

    seg = load_judge(info, device)
    labels, ignore = [], None
    for i in indices:
        lab, ignore = judge_labels(info, dataset.load_ground_truth(i))
        labels.append(lab)
    res = segment_and_score(seg, images, labels, ignore_index=ignore, class_names=seg.class_names)
    return {"miou": res["miou"], "pixel_acc": res["pixel_acc"], "per_class_iou": res["per_class_iou"]}


def diversity_of(sampler, labels: torch.Tensor, num_maps: int, num_samples: int, base_seed: int,
                 device: torch.device, edges: torch.Tensor | None = None) -> dict:
    """Mean pairwise MS-SSIM and LPIPS over ``num_samples`` seeds for each of the first
    ``num_maps`` label maps ``(N, H, W)`` (with their ``(N, 1, H, W)`` instance-edge maps,
    if any); a VAE generator's latent comes from the prior (seeded)."""
    from semsynth.eval.diversity import load_lpips, lpips_pairwise, ms_ssim_pairwise

    lp = load_lpips(device)
    ms, lps = [], []
    for m in range(min(num_maps, labels.shape[0])):
        seeds = [base_seed + 1000 * (m + 1) + k for k in range(num_samples)]
        samples = sampler.sample_many(labels[m].to(sampler.device), seeds,
                                      edges=None if edges is None else edges[m])
        ms.append(float(ms_ssim_pairwise(samples)))
        lps.append(float(lpips_pairwise(samples.to(device), lp)))
    out = {"ms_ssim": float(np.mean(ms)), "lpips": float(np.mean(lps)),
           "diversity_maps": len(ms), "diversity_samples": num_samples}
    if sampler.noise == "none" and sampler.num_outputs > 1:
        out["diversity_note"] = (f"no noise input: {sampler.num_outputs} fixed outputs per label map "
                                 f"(seed i gives output i mod {sampler.num_outputs})")
    elif sampler.deterministic:
        out["diversity_note"] = "deterministic generator (no noise input): every seed gives the same image"
    return out


def _run_metrics(metrics, compute: dict) -> tuple[dict, dict]:
    """Call each requested metric's thunk; collect values, or reasons for absent metrics."""
    out, absent = {}, {}
    for name in metrics:
        if name not in compute:
            absent[name] = "not defined here (real images have one sample per label map)"
            continue
        try:
            out.update(compute[name]())
        except MetricUnavailable as exc:
            absent[name] = str(exc)
    return out, absent


def evaluate_checkpoint(path: str | os.PathLike, split: str | None = None, metrics=ALL_METRICS,
                        limit: int | None = None, out_dir: str | os.PathLike | None = None,
                        device: str | torch.device = "cpu", diversity_maps: int = 10,
                        diversity_samples: int = 5, save_images: int = 8, vae_latent: str | None = None) -> dict:
    """Evaluate a checkpoint's EMA generator on a split (see the module docstring).

    ``vae_latent``: ``prior`` or ``encode_real`` for a VAE generator (default: the
    checkpoint's ``eval.vae_latent``; see :class:`semsynth.config.EvalConfig`); with
    ``data.instance_edges`` the dataset's instance-edge maps are passed to the generator.

    Returns:
        A dict with ``fid``, ``kid``, ``kid_std``, ``miou``, ``pixel_acc``, ``per_class_iou``, ``ms_ssim``,
        ``lpips`` (those computed), ``absent`` (metric → reason, if any), ``n_images``,
        ``resolution`` ``[H, W]``, ``split``, ``seconds``, ``checkpoint``, ``step``.
    """
    from semsynth.data import build_dataset
    from semsynth.labels import to_uint8_image
    from semsynth.sample.sampler import Sampler

    t0 = time.time()
    device = torch.device(device)
    sampler = Sampler.from_checkpoint(path, device=device)
    cfg: Config = sampler.config
    split = split or cfg.data.val_split
    ds = build_dataset(cfg.data, split, train=False, seed=cfg.seed)
    if ds.info.semantic_nc != sampler.info.semantic_nc or ds.info.name != sampler.info.name:
        raise SemsynthError(f"{path}: checkpoint label space {sampler.info.name} does not match dataset {ds.info.name}")
    idx, real, labels, edges = split_items(ds, limit)
    seeds = [cfg.eval.seed + i for i in idx]
    if vae_latent is not None and not sampler.generator.has_encoder:
        raise SemsynthError(f"{path}: --vae-latent applies only to a generator with the VAE image encoder "
                            f"(SPADE or CC-FPSE with model.generator.use_vae: true); this {cfg.method} has none")
    vae_latent = vae_latent or cfg.eval.vae_latent
    z = None
    if vae_latent == "encode_real":
        if not sampler.generator.has_encoder:
            raise SemsynthError(f"{path}: eval.vae_latent encode_real needs a generator with the VAE image encoder")
        z = sampler.posterior_latent(real, seeds)
    elif vae_latent != "prior":
        raise SemsynthError(f"vae_latent must be prior or encode_real, got {vae_latent!r}")
    fake = sampler.generate(labels.to(device), seeds=None if z is not None else seeds, z=z, edges=edges)
    feats: dict = {}

    def fake_features():  # computed once, shared by FID and KID
        if "fake" not in feats:
            from semsynth.eval.fid import inception_features, load_inception
            feats["fake"] = inception_features(fake, load_inception(device), device=device)
        return feats["fake"]

    def fid():
        from semsynth.eval.fid import feature_stats, frechet_distance
        return {"fid": float(frechet_distance(*feature_stats(fake_features()),
                                              *real_fid_stats(cfg, split, len(idx), device)))}

    def kid():
        from semsynth.eval.fid import kernel_inception_distance
        value, std = kernel_inception_distance(fake_features(), real_features(cfg, split, len(idx), device))
        return {"kid": value, "kid_std": std}

    compute = {
        "fid": fid,
        "kid": kid,
        "miou": lambda: miou_of(list(fake), ds, idx, sampler.info, device),
        "diversity": lambda: diversity_of(sampler, labels, diversity_maps, diversity_samples,
                                          cfg.eval.seed, device, edges),
    }
    result, absent = _run_metrics(metrics, compute)
    result.update({"n_images": len(idx), "resolution": [cfg.data.height, cfg.data.width], "split": split,
                   "checkpoint": str(path), "step": sampler.checkpoint_step, "method": cfg.method})
    if sampler.generator.has_encoder:
        result["vae_latent"] = vae_latent
    if absent:
        result["absent"] = absent
    result["seconds"] = round(time.time() - t0, 2)
    if out_dir is not None:
        _write_outputs(Path(out_dir), result, to_uint8_image(fake[:save_images]), [ds.names[i] for i in idx])
    return result


def evaluate_real(cfg: Config, split: str | None = None, metrics=("miou", "fid", "kid"), limit: int | None = None,
                  native: bool = False, device: str | torch.device = "cpu",
                  out_dir: str | os.PathLike | None = None) -> dict:
    """The same pipeline on real images: the ceiling for mIoU (see the module docstring)."""
    from semsynth.data import build_dataset

    t0 = time.time()
    device = torch.device(device)
    split = split or cfg.data.val_split
    ds = build_dataset(_photos_only(cfg.data), split, train=False, seed=cfg.seed)
    idx, real, _ = split_images(ds, limit)

    def miou():
        images = [ds.load_image(i) for i in idx] if native else list(real)
        return miou_of(images, ds, idx, ds.info, device)

    def fid():
        stats = real_fid_stats(cfg, cfg.data.train_split, None, device)
        return {"fid": fid_of(real, stats, device), "fid_reference_split": cfg.data.train_split}

    def kid():
        from semsynth.eval.fid import inception_features, kernel_inception_distance, load_inception
        value, std = kernel_inception_distance(inception_features(real, load_inception(device), device=device),
                                               real_features(cfg, cfg.data.train_split, None, device))
        return {"kid": value, "kid_std": std, "kid_reference_split": cfg.data.train_split}

    compute = {"miou": miou, "fid": fid, "kid": kid}
    result, absent = _run_metrics(metrics, compute)
    result.update({"n_images": len(idx), "split": split, "native": native, "method": "real",
                   "resolution": "native" if native else [cfg.data.height, cfg.data.width]})
    if absent:
        result["absent"] = absent
    result["seconds"] = round(time.time() - t0, 2)
    if out_dir is not None:
        _write_outputs(Path(out_dir), result, None, None)
    return result


def _write_outputs(out: Path, result: dict, images, names) -> None:
    import json

    from semsynth.fileio import atomic_write_bytes
    from semsynth.imageio import save_png

    atomic_write_bytes(out / "metrics.json", (json.dumps(result, indent=2) + "\n").encode())
    if images is not None:
        for img, name in zip(images, names):
            save_png(out / "images" / f"{name}.png", img)
