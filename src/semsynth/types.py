"""Shared value types and errors of semsynth.

Shape contracts used across the package:

* image: ``(N, 3, H, W)`` float32 in ``[-1, 1]`` (one sample: ``(3, H, W)``);
* label map: ``(N, H, W)`` int64, values are the dataset's label ids
  ``0 .. semantic_nc - 1`` (the don't-care id included);
* one-hot label map: ``(N, semantic_nc, H, W)`` float32 in ``{0, 1}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class SemsynthError(Exception):
    """Base class of the errors semsynth raises for bad input (shown without traceback by the CLI)."""


class DataError(SemsynthError):
    """A data file is unreadable, unpaired, of the wrong size or holds ids outside the dataset."""


class ConfigError(SemsynthError):
    """A configuration value or key is invalid, or a checkpoint does not match a configuration."""


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset's label space.

    Label ids are those of the label maps the datasets return: ``0 .. semantic_nc - 1``.
    The don't-care id (``ignore_index``), if any, is one of them; it is a channel of the
    one-hot input of the generator (as in the official OASIS code) but is never a target
    of the discriminator's class-balanced loss and never counted in mIoU.

    Attributes:
        name: dataset name, e.g. ``"camvid"``.
        class_names: one name per label id, length ``semantic_nc``.
        palette: one RGB colour (0-255 ints) per label id, length ``semantic_nc``.
        ignore_index: label id of the don't-care/void class, or ``None``.
        instance_edges: the model input carries one more channel after the one-hot label
            map: the instance-edge map (SPADE/CC-FPSE on Cityscapes and COCO-Stuff;
            :func:`semsynth.labels.label_input`). Set from ``data.instance_edges``.
    """

    name: str
    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    ignore_index: int | None = None
    instance_edges: bool = False
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if len(self.palette) != len(self.class_names):
            raise ValueError(
                f"DatasetInfo {self.name!r}: {len(self.palette)} palette colours for "
                f"{len(self.class_names)} classes"
            )
        if self.ignore_index is not None and not 0 <= self.ignore_index < len(self.class_names):
            raise ValueError(f"DatasetInfo {self.name!r}: ignore_index {self.ignore_index} out of range")

    def to_dict(self) -> dict:
        """The label space as plain data (what checkpoints and exports store; ``extra``
        is left out): ``{"name", "class_names", "palette", "ignore_index"}``, and
        ``"instance_edges": true`` when set."""
        d = {"name": self.name, "class_names": list(self.class_names),
             "palette": [list(c) for c in self.palette], "ignore_index": self.ignore_index}
        if self.instance_edges:
            d["instance_edges"] = True
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DatasetInfo":
        """Inverse of :meth:`to_dict`.

        Raises:
            KeyError: a key missing; ValueError: as the constructor.
        """
        return cls(name=d["name"], class_names=tuple(d["class_names"]),
                   palette=tuple(tuple(int(v) for v in c) for c in d["palette"]), ignore_index=d["ignore_index"],
                   instance_edges=bool(d.get("instance_edges", False)))

    @property
    def semantic_nc(self) -> int:
        """Number of one-hot channels = number of label ids, don't-care included."""
        return len(self.class_names)

    @property
    def input_nc(self) -> int:
        """Channels of the model's label input: ``semantic_nc``, + 1 with ``instance_edges``."""
        return self.semantic_nc + int(self.instance_edges)

    @property
    def num_classes(self) -> int:
        """Number of real semantic classes N (don't-care excluded)."""
        return self.semantic_nc - (0 if self.ignore_index is None else 1)

    @property
    def real_class_ids(self) -> tuple[int, ...]:
        """Label ids of the real classes, in increasing order."""
        return tuple(i for i in range(self.semantic_nc) if i != self.ignore_index)
