"""Run-folder safety: one writer per run folder, and no temp files left behind.

* :class:`RunLock` — ``<run>/.lock``, held with an exclusive ``flock`` for the whole run (the
  file also records the owner's pid and host, for the message). A second ``semsynth train`` on
  the same folder stops at once naming the owner. The kernel drops the lock when its process
  ends, however it ends (SIGKILL included), so a leftover ``.lock`` file of a dead run is
  simply taken over: no pid guessing, no pid-reuse problem. (On network file systems
  ``flock`` may be local to one machine; there, do not point two machines' runs at one folder.)
* :func:`resume_state` — which checkpoint `--resume` continues from.
* :func:`remove_stale_temp_files` — :func:`semsynth.fileio.atomic_write_bytes` writes
  ``.<name>.<random>.tmp`` next to its target and renames it; a process killed between the
  two (SIGKILL, power loss) leaves the temp file, as big as a checkpoint. The trainer, which
  holds the lock, removes the temp files of the files *it* writes (checkpoints, the config,
  sample grids) on start/resume and before every checkpoint save.
"""

from __future__ import annotations

import fcntl
import os
import socket
import sys
from pathlib import Path

from semsynth.model.checkpoint import TrainingState, UnsafeCheckpoint, load_training_state
from semsynth.types import ConfigError

__all__ = ["RunLock", "RunFolderBusy", "remove_stale_temp_files", "resume_state"]

# Temp files of the trainer's own atomic writes: (folder relative to the run, glob).
_OWN_TEMP_FILES = (
    (".", ".config.yaml.*.tmp"),
    ("checkpoints", ".latest.pt.*.tmp"),
    ("checkpoints", ".step_*.pt.*.tmp"),
    ("checkpoints", ".best.pt.*.tmp"),
    ("samples", ".step_*.png.*.tmp"),
)


class RunFolderBusy(ConfigError):
    """Another live process holds the run folder's lock (the message names its pid and host)."""


class RunLock:
    """Exclusive lock on a run folder for the lifetime of a training run.

    Args:
        out_dir: the run folder (created by :meth:`acquire` if missing).

    Use :meth:`acquire` / :meth:`release` (or as a context manager); :meth:`check` only
    tests (nothing is written).

    Raises (from :meth:`acquire` and :meth:`check`):
        RunFolderBusy: another process holds the lock (the message names its pid, host and
            the lock file).
    """

    def __init__(self, out_dir: str | os.PathLike) -> None:
        self.path = Path(out_dir) / ".lock"
        self._fd: int | None = None
        self.took_over: str | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def _owner(self) -> str:
        try:
            pid, host = (self.path.read_text().split() + ["?", "?"])[:2]
        except OSError:
            pid, host = "?", "?"
        return f"pid {pid} on host {host}"

    def _try(self) -> int | None:
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    def _busy(self) -> RunFolderBusy:
        return RunFolderBusy(f"{self.path.parent} is in use by another semsynth process ({self._owner()}, lock "
                             f"file {self.path}); wait for it to end or choose another --out")

    def check(self) -> None:
        """Raise :class:`RunFolderBusy` if another process holds the lock."""
        if self.held or not self.path.exists():
            return
        fd = self._try()
        if fd is None:
            raise self._busy()
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def acquire(self) -> "RunLock":
        if self.held:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        previous = self.path.read_text().strip() if self.path.exists() else ""
        fd = self._try()
        if fd is None:
            raise self._busy()
        if previous:
            self.took_over = f"lock file of an ended run ({previous}) taken over"
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            try:
                self.path.unlink(missing_ok=True)
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def remove_stale_temp_files(out_dir: str | os.PathLike, quiet: bool = False) -> tuple[int, int]:
    """Delete the temp files of the trainer's own interrupted atomic writes in a run folder.

    Only the names the trainer writes are touched (``config.yaml``, ``latest.pt``,
    ``step_*.pt``, ``best.pt``, ``samples/step_*.png``): another command writing into the
    folder (e.g. ``semsynth eval --out RUN/eval``) keeps its temp files. Call it only while
    holding the folder's :class:`RunLock`.

    Returns:
        ``(files, bytes)`` removed; a one-line note goes to stderr unless ``quiet``.
    """
    out = Path(out_dir)
    n = size = 0
    for sub, pattern in _OWN_TEMP_FILES:
        d = out / sub
        if not d.is_dir():
            continue
        for p in d.glob(pattern):
            try:
                size += p.stat().st_size
                p.unlink()
                n += 1
            except FileNotFoundError:
                pass
    if n and not quiet:
        print(f"note: removed {n} temp file(s) of interrupted writes ({size / 1e6:.1f} MB) from {out}",
              file=sys.stderr)
    return n, size


def resume_state(latest: Path, last_good: bool) -> tuple[TrainingState, Path]:
    """The state to resume: ``latest.pt``, or (``last_good``) the newest readable
    ``step_*.pt`` of the same folder when ``latest.pt`` is corrupt.

    Returns:
        ``(state, the file it came from)``.

    Raises:
        ConfigError: no ``latest.pt``; a corrupt one without ``last_good`` (names the
            newest intact ``step_*.pt`` and the flag), or no intact file at all.
        UnsafeCheckpoint: ``latest.pt`` is refused as unsafe (no fallback to older files).
    """
    if not latest.exists():
        raise ConfigError(f"--resume: no checkpoint at {latest}")
    try:
        return load_training_state(latest), latest
    except UnsafeCheckpoint:
        raise  # refused, not corrupt: no fallback to an older file of the same folder
    except ConfigError as exc:
        problem = str(exc)
    intact = None
    def step_of(p: Path) -> int:
        try:
            return int(p.stem.split("_", 1)[1])
        except (IndexError, ValueError):
            return -1

    for p in sorted(latest.parent.glob("step_*.pt"), key=step_of, reverse=True):
        try:
            ckpt = load_training_state(p)
        except ConfigError:
            continue
        intact = (ckpt, p)
        break
    if not last_good or intact is None:
        hint = (f"the newest intact checkpoint is {intact[1]} (step {intact[0].step}); pass "
                f"--resume-from-last-good to continue from it" if intact is not None
                else "no intact step_*.pt checkpoint exists in that folder either")
        raise ConfigError(f"--resume: {latest} is corrupt or truncated ({problem}); {hint}")
    print(f"note: {latest} is unreadable; resuming from {intact[1]} (step {intact[0].step}) "
          "as --resume-from-last-good asks", file=sys.stderr)
    return intact
