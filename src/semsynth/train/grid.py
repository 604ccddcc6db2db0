"""Sample grids of a run: ``samples/step_NNNNNNN.png``.

One row per val label map (``train.grid_labels``, evenly spaced over the split: consecutive
video frames look alike): colourised label | real photo | EMA samples of seeds
``GRID_SEED … GRID_SEED + grid_samples − 1``, at the training resolution.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from semsynth.config import Config
from semsynth.data import build_dataset
from semsynth.imageio import save_png
from semsynth.labels import colorize, label_input, to_uint8_image
from semsynth.types import DatasetInfo

__all__ = ["GRID_SEED", "SampleGrid", "grid_image"]

GRID_SEED = 0  # EMA samples of grid column j use seed GRID_SEED + j


def grid_image(label_rgb: np.ndarray, real: np.ndarray, samples: list[np.ndarray]) -> np.ndarray:
    """One grid row per label map: colourised label | real | samples (uint8 HWC, 2-px gaps).

    Args:
        label_rgb, real: ``(N, H, W, 3)`` uint8; samples: a list of ``(N, H, W, 3)`` uint8.

    Returns:
        ``(N·H + 2(N−1), W_total, 3)`` uint8.
    """
    rows = []
    for i in range(label_rgb.shape[0]):
        tiles = [label_rgb[i], real[i]] + [s[i] for s in samples]
        h = tiles[0].shape[0]
        gap = np.full((h, 2, 3), 255, np.uint8)
        row = np.concatenate(sum(([t, gap] for t in tiles), [])[:-1], axis=1)
        rows.append(row)
        rows.append(np.full((2, row.shape[1], 3), 255, np.uint8))
    return np.concatenate(rows[:-1], axis=0)


class SampleGrid:
    """The grid of a run (the val pairs are read once, when first written).

    Args:
        cfg: the run config (``data``, ``train.grid_labels``, ``train.grid_samples``, seed).
        info: the label space (palette).
    """

    def __init__(self, cfg: Config, info: DatasetInfo) -> None:
        self.cfg, self.info = cfg, info
        self._pairs: tuple[torch.Tensor, ...] | None = None

    def pairs(self) -> tuple[torch.Tensor, ...]:
        """``(images (k, 3, H, W) float [-1, 1], label maps (k, H, W) int64)`` of the grid,
        and with ``data.instance_edges`` their edge maps ``(k, 1, H, W)``."""
        if self._pairs is None:
            val = build_dataset(self.cfg.data, self.cfg.data.val_split, train=False, seed=self.cfg.seed)
            k = min(self.cfg.train.grid_labels, len(val))
            items = [val[int(i)] for i in np.linspace(0, len(val) - 1, k).round()]
            self._pairs = tuple(torch.stack(parts) for parts in zip(*items))
        return self._pairs

    @torch.no_grad()
    def render(self, ema: torch.nn.Module, device: torch.device) -> np.ndarray:
        """The grid image of generator ``ema`` (in eval mode) as uint8 HWC."""
        image, label, *edges = self.pairs()
        onehot = label_input(label, self.info, edges[0] if edges else None).to(device)
        samples = [to_uint8_image(ema(onehot, seeds=[GRID_SEED + j] * label.shape[0]))
                   for j in range(self.cfg.train.grid_samples)]
        return grid_image(colorize(label, self.info.palette), to_uint8_image(image), samples)

    def write(self, ema: torch.nn.Module, device: torch.device, out: Path, step: int) -> tuple[Path, np.ndarray]:
        """Write ``out/samples/step_NNNNNNN.png`` (atomically).

        Returns:
            ``(path, grid)``.
        """
        grid = self.render(ema, device)
        path = Path(out) / "samples" / f"step_{step:07d}.png"
        save_png(path, grid)
        return path, grid
