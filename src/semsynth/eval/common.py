"""What the metric modules share: the "metric unavailable" error and the cache folder.

Kept apart from :mod:`semsynth.eval.evaluate` so that :mod:`semsynth.eval.fid` and
:mod:`semsynth.eval.diversity` (which raise the error) and ``evaluate`` (which catches it
and reports the metric absent) import this module, not each other.
"""

from __future__ import annotations

from pathlib import Path

from semsynth.types import SemsynthError

__all__ = ["MetricUnavailable", "cache_dir"]


class MetricUnavailable(SemsynthError):
    """A metric cannot be computed here (missing weights/package, no judge for the dataset).

    :func:`semsynth.eval.evaluate.evaluate_checkpoint` reports such a metric as absent,
    with this message as the reason, never as zero.
    """


def cache_dir() -> Path:
    """Where real-image FID statistics are cached: ``$SEMSYNTH_CACHE/fid``, default
    ``~/.cache/semsynth/fid`` (read at call time, so tests may set the variable)."""
    from semsynth.config import cache_root

    return cache_root() / "fid"
