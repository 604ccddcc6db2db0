"""A run's logs: ``stats.jsonl`` (one JSON record per line) and TensorBoard events.

Rank 0 of a run writes them; other processes get a :class:`RunLog` that writes nothing.
On resume, records and events of steps after the resumed one (a killed run's, or those after
a last-good checkpoint) are dropped, so that no step is logged twice.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

from semsynth.fileio import atomic_write_bytes

__all__ = ["RunLog"]


class RunLog:
    """``stats.jsonl`` and TensorBoard of one run folder.

    Args:
        out: the run folder.
        enabled: False in every process but rank 0 (then nothing is written).
    """

    def __init__(self, out: Path, enabled: bool = True) -> None:
        self.out = Path(out)
        self.enabled = enabled
        self._tb = None

    def open(self, step: int, tensorboard: bool) -> None:
        """Drop records after ``step`` (resume) and open TensorBoard (``tensorboard``; a
        missing ``tensorboard`` package gives a note and no events)."""
        if not self.enabled:
            return
        self._trim(step)
        if not tensorboard:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            print("note: the tensorboard package is not installed: no TensorBoard logs "
                  "(pip install tensorboard, or set train.tensorboard=false)", file=sys.stderr)
            return
        self._wait_for_a_later_second()
        self._tb = SummaryWriter(log_dir=str(self.out), purge_step=step + 1 if step > 0 else None)

    def _wait_for_a_later_second(self) -> None:
        """TensorBoard reads event files in name order, and a name starts with the whole second
        it was opened in, then host and pid. A resume opened in the same second as the killed
        run's file could sort before it, and its purge of the killed run's later steps would
        then be read first and undone; so wait (at most 2 s) until the second is a later one."""
        latest = max((int(m.group(1)) for f in self.out.glob("events.out.tfevents.*")
                      if (m := re.match(r"events\.out\.tfevents\.(\d+)\.", f.name))), default=None)
        while latest is not None and latest - 1 <= int(time.time()) <= latest:  # not for a clock far off
            time.sleep(0.05)

    def _trim(self, step: int) -> None:
        path = self.out / "stats.jsonl"
        if step == 0 or not path.exists():
            return
        keep = [line for line in path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= step]
        atomic_write_bytes(path, ("\n".join(keep) + "\n" if keep else "").encode())

    def record(self, rec: dict) -> None:
        """Append one record to ``stats.jsonl``."""
        if not self.enabled:
            return
        with open(self.out / "stats.jsonl", "a") as fh:
            fh.write(json.dumps(rec) + "\n")

    def tb(self, fn: str, *args, **kwargs) -> None:
        """A TensorBoard write (``add_scalar``, ``add_image``); on an OSError (disk full, ...)
        TensorBoard is turned off with a note."""
        if self._tb is None:
            return
        try:
            getattr(self._tb, fn)(*args, **kwargs)
        except OSError as exc:
            print(f"note: TensorBoard logging stopped ({exc})", file=sys.stderr)
            self._tb = None

    def window(self, step: int, images_seen: int, elapsed: float, means: dict[str, float], nsum: int,
               window_s: float, batch_size: int, lr_scale: float | None = None) -> None:
        """One record for a logging window: step, images seen, seconds (s), seconds per
        step over the window, the loss means, and ``lr_scale`` when the LR decays."""
        rec = {"step": step, "images_seen": images_seen, "seconds": round(elapsed, 3),
               "sec_per_step": round(window_s / max(nsum, 1), 4)}
        rec.update(means)
        if lr_scale is not None:
            rec["lr_scale"] = round(lr_scale, 6)
        self.record(rec)
        for k, v in means.items():
            self.tb("add_scalar", f"loss/{k}", v, step)
        self.tb("add_scalar", "speed/sec_per_step", rec["sec_per_step"], step)
        if rec["sec_per_step"] > 0:
            self.tb("add_scalar", "speed/images_per_s", batch_size / rec["sec_per_step"], step)

    def close(self) -> None:
        """Close TensorBoard (an OSError, e.g. a full disk, gives a note)."""
        if self._tb is None:
            return
        tb, self._tb = self._tb, None
        try:
            tb.close()
        except OSError as exc:
            print(f"note: TensorBoard logs incomplete ({exc})", file=sys.stderr)
