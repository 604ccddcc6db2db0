"""Cityscapes label ids → the 19 evaluated train ids (cityscapesScripts ``helpers/labels.py``).

Used by the Cityscapes loader (:mod:`semsynth.data.cityscapes`) and by the ESPNet judge's
evaluation (:mod:`semsynth.eval`), which scores the 19 train-id classes.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

__all__ = ["CITYSCAPES_CLASS_NAMES", "CITYSCAPES_LABEL_TO_TRAIN_ID", "cityscapes_label_to_train_id"]

#: The 19 train-id classes, in train-id order.
CITYSCAPES_CLASS_NAMES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
    "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck",
    "bus", "train", "motorcycle", "bicycle",
)  # fmt: skip


_CITYSCAPES_TRAIN_IDS: Sequence[tuple[int, int]] = (
    (-1, 255), (0, 255), (1, 255), (2, 255), (3, 255), (4, 255), (5, 255), (6, 255),
    (7, 0), (8, 1), (9, 255), (10, 255), (11, 2), (12, 3), (13, 4), (14, 255), (15, 255),
    (16, 255), (17, 5), (18, 255), (19, 6), (20, 7), (21, 8), (22, 9), (23, 10), (24, 11),
    (25, 12), (26, 13), (27, 14), (28, 15), (29, 255), (30, 255), (31, 16), (32, 17),
    (33, 18),
)  # fmt: skip

#: Lookup table indexed by ``labelId + 1`` (so index 0 is labelId -1, license plate):
#: int64 array of 35 trainIds, 0-18 for the 19 evaluated classes, 255 = ignore.
CITYSCAPES_LABEL_TO_TRAIN_ID: np.ndarray = np.full(35, 255, dtype=np.int64)
for _lid, _tid in _CITYSCAPES_TRAIN_IDS:
    CITYSCAPES_LABEL_TO_TRAIN_ID[_lid + 1] = _tid
CITYSCAPES_LABEL_TO_TRAIN_ID.setflags(write=False)


def cityscapes_label_to_train_id(label):
    """Map Cityscapes labelIds to the 19 trainIds (standard cityscapesScripts table).

    Args:
        label: integer array / tensor of labelIds in ``[-1, 33]`` (any shape), e.g. a
            ``*_gtFine_labelIds.png`` read as uint8.

    Returns:
        int64 array (numpy input) or int64 tensor (torch input, same device) of trainIds:
        0 road … 18 bicycle (see :data:`CITYSCAPES_CLASS_NAMES`), 255 = ignore.

    Raises:
        ValueError: non-integer input, or an id outside ``[-1, 33]``.
    """
    if torch.is_tensor(label):
        if label.is_floating_point():
            raise ValueError(f"labelIds must be integers, got {label.dtype}")
        lab = label.to(torch.int64)
        if lab.numel() and (int(lab.min()) < -1 or int(lab.max()) > 33):
            raise ValueError(f"Cityscapes labelIds must lie in [-1, 33], got {int(lab.min())}..{int(lab.max())}")
        lut = torch.as_tensor(np.array(CITYSCAPES_LABEL_TO_TRAIN_ID), device=lab.device)
        return lut[lab + 1]
    arr = np.asarray(label)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"labelIds must be integers, got {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < -1 or arr.max() > 33):
        raise ValueError(f"Cityscapes labelIds must lie in [-1, 33], got {arr.min()}..{arr.max()}")
    return CITYSCAPES_LABEL_TO_TRAIN_ID[arr + 1]
