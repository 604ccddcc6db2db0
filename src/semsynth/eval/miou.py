"""Mean intersection-over-union with a pretrained segmenter as the judge.

The segmentation-based metric of semantic image synthesis (pix2pixHD, SPADE, OASIS): segment
the (generated or real) images with a fixed pretrained network and compare its predictions
with the input label maps. This module holds the confusion matrix and a general
segment-and-score loop. The real-image reference run is ``semsynth eval-real --native``
(``shared/README.md``: CamVid val mIoU 69.36, pixel accuracy 93.30 with the ESPNet judge).

Public API::

    ConfusionMatrix(num_classes, class_names=None)
        .update(pred, target, ignore_index=None) / .compute() -> dict / .reset()
    segment_and_score(segmenter, images, labels, ignore_index=None, batch_size=None,
                      class_names=None) -> dict
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "ConfusionMatrix",
    "segment_and_score",
    "CAMVID_VOID",
]

#: CamVid (SegNet split) ground-truth id of the void class, excluded from scoring.
CAMVID_VOID = 11


def _as_int64_numpy(x, what: str) -> np.ndarray:
    if torch.is_tensor(x):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{what} must hold integers, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


class ConfusionMatrix:
    """Accumulated confusion matrix over a split, and the mIoU / pixel accuracy from it.

    ``matrix[t, p]`` counts pixels with ground truth ``t`` predicted as ``p``. One matrix is
    accumulated over all images of a split (the standard protocol: IoU from summed counts,
    not a mean of per-image IoUs).

    Args:
        num_classes: K, the number of scored classes (ids ``0 .. K-1``).
        class_names: optional K names for ``per_class_iou``; default ``"0" .. "K-1"``.

    Raises:
        ValueError: ``num_classes < 1`` or ``len(class_names) != num_classes``.
    """

    def __init__(self, num_classes: int, class_names: Sequence[str] | None = None) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        self.num_classes = int(num_classes)
        self.class_names = (
            tuple(class_names) if class_names is not None else tuple(map(str, range(num_classes)))
        )
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def reset(self) -> None:
        """Zero the counts."""
        self.matrix[:] = 0

    def update(self, pred, target, ignore_index: int | None = None) -> None:
        """Add one batch of predictions.

        Args:
            pred: ``(N, H, W)`` (or any shape) integer class ids in ``[0, K)``; torch tensor
                or numpy array.
            target: ground truth of the same shape. Pixels equal to ``ignore_index``, or with
                an id outside ``[0, K)``, are excluded (from the matrix, hence from every
                metric).
            ignore_index: ground-truth id to skip (e.g. 11 for CamVid void, 255 for
                Cityscapes / COCO-Stuff), or ``None``.

        Raises:
            ValueError: ``pred`` and ``target`` shapes differ (message gives both), non-integer
                inputs, or a prediction outside ``[0, K)`` on a counted pixel.
        """
        p = _as_int64_numpy(pred, "pred")
        t = _as_int64_numpy(target, "target")
        if p.shape != t.shape:
            raise ValueError(
                f"pred and target shapes differ: pred {tuple(p.shape)} vs target {tuple(t.shape)}"
            )
        k = self.num_classes
        keep = (t >= 0) & (t < k)
        if ignore_index is not None:
            keep &= t != ignore_index
        p = p[keep]
        t = t[keep]
        if p.size and (p.min() < 0 or p.max() >= k):
            raise ValueError(f"predictions must lie in [0, {k}), got {p.min()}..{p.max()}")
        self.matrix += np.bincount(t * k + p, minlength=k * k).reshape(k, k)

    def compute(self) -> dict:
        """The scores of the accumulated counts.

        Rule: the IoU of class c is ``TP / (TP + FP + FN)`` from the summed matrix; mIoU is the
        mean over the classes with a **nonzero union** (classes that occur in the counted
        ground truth or in the predictions); a class absent from both is left out rather
        than counted as 0 or 1.

        Returns:
            dict with
              ``miou``: float, percent (NaN if nothing was counted);
              ``pixel_acc``: float, percent of counted pixels predicted correctly (NaN if none);
              ``per_class_iou``: ``{name: percent}`` for the classes with nonzero union only;
              ``matrix``: ``(K, K)`` int64 numpy copy (rows ground truth, columns prediction);
              ``num_pixels``: int, counted pixels.
        """
        m = self.matrix
        tp = np.diag(m).astype(np.float64)
        union = m.sum(0) + m.sum(1) - np.diag(m)
        valid = union > 0
        iou = np.divide(tp, union, out=np.zeros_like(tp), where=valid)
        total = int(m.sum())
        miou = float(iou[valid].mean() * 100) if valid.any() else float("nan")
        acc = float(tp.sum() / total * 100) if total else float("nan")
        per_class = {
            self.class_names[c]: float(iou[c] * 100) for c in range(self.num_classes) if valid[c]
        }
        return {
            "miou": miou,
            "pixel_acc": acc,
            "per_class_iou": per_class,
            "matrix": m.copy(),
            "num_pixels": total,
        }


def _upsample_pred(pred: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(N, h, w)`` int64 → ``(N, H, W)`` by nearest neighbour (PyTorch ``"nearest"``)."""
    if tuple(pred.shape[-2:]) == tuple(size):
        return pred
    up = F.interpolate(pred[:, None].to(torch.float32), size=size, mode="nearest")
    return up[:, 0].round().to(torch.int64)


def segment_and_score(
    segmenter,
    images: Iterable,
    labels: Iterable,
    ignore_index: int | None = None,
    batch_size: int | None = None,
    class_names: Sequence[str] | None = None,
) -> dict:
    """Segment images with a judge and score the predictions against full-resolution labels.

    Args:
        segmenter: an object with ``num_classes``, ``class_names`` (optional),
            ``predict(float (N,3,H,W) in [-1,1]) -> (N,h,w) int64`` and
            ``predict_uint8(uint8 (N,H,W,3)) -> (N,h,w) int64``, e.g. the
            :class:`~semsynth.eval.segmenters.espnet.Segmenter` of ``load_espnet``.
        images: iterable of images, each either a float tensor ``(3, H, W)`` RGB in
            ``[-1, 1]`` (generated images; routed to ``predict``) or a uint8 ``(H, W, 3)`` RGB
            numpy array / tensor (real images, fed exactly; routed to ``predict_uint8``).
            A leading batch dimension of 1 is accepted.
        labels: iterable, parallel to ``images``, of ``(H_gt, W_gt)`` integer ground truth
            (numpy or tensor) in the segmenter's class ids; extra ids are ignored (see
            :meth:`ConfusionMatrix.update`).
        ignore_index: ground-truth id excluded from scoring (CamVid: 11).
        batch_size: images per forward pass (default: the segmenter's own).
        class_names: names for ``per_class_iou`` (default: ``segmenter.class_names``).

    Resolution: the image is resized (bilinear) to the segmenter's input size inside the
    segmenter; its ``(h, w)`` prediction is compared with the **full-resolution** ground
    truth. If they differ, the prediction is upsampled to ``(H_gt, W_gt)`` by nearest
    neighbour (``F.interpolate(mode="nearest")``); the labels are never resampled.

    Returns:
        :meth:`ConfusionMatrix.compute`'s dict plus ``num_images`` (int).

    Raises:
        ValueError: ``images`` and ``labels`` have different lengths, an image of an
            unsupported dtype / shape, or a label that is not 2-D.
    """
    names = class_names if class_names is not None else getattr(segmenter, "class_names", None)
    cm = ConfusionMatrix(segmenter.num_classes, names)
    bs = int(batch_size or getattr(segmenter, "batch_size", 8))
    count = 0
    pending_imgs: list = []
    pending_labs: list[np.ndarray] = []
    pending_kind: tuple | None = None

    def flush() -> None:
        nonlocal pending_imgs, pending_labs, pending_kind
        if not pending_imgs:
            return
        kind = pending_kind[0]
        if kind == "uint8":
            pred = segmenter.predict_uint8(torch.stack(pending_imgs), batch_size=bs)
        else:
            pred = segmenter.predict(torch.stack(pending_imgs), batch_size=bs)
        pred = torch.as_tensor(pred).cpu()
        for i, lab in enumerate(pending_labs):
            p = _upsample_pred(pred[i : i + 1], lab.shape)[0]
            cm.update(p.numpy(), lab, ignore_index)
        pending_imgs, pending_labs, pending_kind = [], [], None

    sentinel = object()
    img_iter, lab_iter = iter(images), iter(labels)
    while True:
        img = next(img_iter, sentinel)
        lab = next(lab_iter, sentinel)
        if img is sentinel and lab is sentinel:
            break
        if img is sentinel or lab is sentinel:
            raise ValueError(f"images and labels differ in length (after {count} pairs)")
        t = torch.from_numpy(np.array(img)) if not torch.is_tensor(img) else img.detach()
        if t.dim() == 4 and t.shape[0] == 1:
            t = t[0]
        if t.dtype == torch.uint8:
            if t.dim() != 3 or t.shape[-1] != 3:
                raise ValueError(f"uint8 image must be (H, W, 3) RGB, got {tuple(t.shape)}")
            kind = ("uint8", tuple(t.shape))
        elif t.is_floating_point():
            if t.dim() != 3 or t.shape[0] != 3:
                raise ValueError(f"float image must be (3, H, W) in [-1, 1], got {tuple(t.shape)}")
            kind = ("float", tuple(t.shape))
        else:
            raise ValueError(f"image must be uint8 (H,W,3) or float (3,H,W), got {t.dtype}")
        lab_np = _as_int64_numpy(lab, "label")
        if lab_np.ndim == 3 and lab_np.shape[0] == 1:
            lab_np = lab_np[0]
        if lab_np.ndim != 2:
            raise ValueError(f"label must be (H, W), got {tuple(lab_np.shape)}")
        if pending_kind is not None and (kind != pending_kind or len(pending_imgs) >= bs):
            flush()
        pending_imgs.append(t)
        pending_labs.append(lab_np)
        pending_kind = kind
        count += 1
    flush()
    out = cm.compute()
    out["num_images"] = count
    return out
