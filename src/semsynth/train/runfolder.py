"""Run-folder safety: one writer per run folder, and no temp files left behind.

* :class:`RunLock` — ``<run>/.lock`` holds the owner's pid and host, created with
  ``O_CREAT | O_EXCL``. A second ``semsynth train`` on the same folder stops at once with a
  message naming the owner. A lock whose process is gone (same host, pid not alive: the run
  was killed) is stale and is taken over, with a note.
* :func:`remove_stale_temp_files` — :func:`semsynth.config.atomic_write_bytes` writes
  ``.<name>.<random>.tmp`` next to its target and renames it; a process killed between the
  two (SIGKILL, power loss) leaves the temp file, as big as a checkpoint. The trainer, which
  holds the lock and is therefore the only writer, removes them on start/resume and before
  every checkpoint save.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

from semsynth.types import ConfigError

__all__ = ["RunLock", "RunFolderBusy", "remove_stale_temp_files", "TEMP_GLOB"]

#: Temp files of :func:`semsynth.config.atomic_write_bytes` (``mkstemp(prefix=".name.", suffix=".tmp")``).
TEMP_GLOB = ".*.tmp"


class RunFolderBusy(ConfigError):
    """Another live process holds the run folder's lock (the message names its pid and host)."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class RunLock:
    """Exclusive lock on a run folder for the lifetime of a training process.

    Args:
        out_dir: the run folder (created if missing).

    Use as a context manager, or :meth:`acquire` / :meth:`release`.

    Raises (from :meth:`acquire`):
        RunFolderBusy: a live process on this host holds the lock, or a process on another
            host (which cannot be checked from here: the message says to remove the lock file
            by hand if that run is known to be dead).
    """

    def __init__(self, out_dir: str | os.PathLike) -> None:
        self.path = Path(out_dir) / ".lock"
        self.held = False
        self.took_over: str | None = None

    def _read(self) -> tuple[int, str]:
        try:
            pid_s, host = (self.path.read_text().split() + ["", ""])[:2]
            return int(pid_s), host
        except (OSError, ValueError):
            return -1, ""

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = f"{os.getpid()} {socket.gethostname()}\n"
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                pid, host = self._read()
                if host and host != socket.gethostname():
                    raise RunFolderBusy(
                        f"{self.path.parent} is locked by pid {pid} on host {host} ({self.path}); if that run is "
                        f"no longer alive, delete {self.path}") from None
                if pid == os.getpid():  # this process already holds it (e.g. a second Trainer)
                    self.held = True
                    return self
                if pid > 0 and _pid_alive(pid):
                    raise RunFolderBusy(
                        f"{self.path.parent} is in use by another semsynth process (pid {pid}, lock file "
                        f"{self.path}); wait for it or choose another --out") from None
                self.took_over = f"stale lock of pid {pid} (no such process) taken over"
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(me)
            self.held = True
            return self
        raise RunFolderBusy(f"could not lock {self.path.parent} ({self.path} keeps reappearing)")

    def check(self) -> None:
        """Raise :class:`RunFolderBusy` if a live process holds the lock (nothing is written)."""
        if not self.path.exists():
            return
        pid, host = self._read()
        if host and host != socket.gethostname():
            raise RunFolderBusy(f"{self.path.parent} is locked by pid {pid} on host {host} ({self.path}); if that "
                                f"run is no longer alive, delete {self.path}")
        if pid > 0 and pid != os.getpid() and _pid_alive(pid):
            raise RunFolderBusy(f"{self.path.parent} is in use by another semsynth process (pid {pid}, lock file "
                                f"{self.path}); wait for it or choose another --out")

    def release(self) -> None:
        if self.held:
            pid, _ = self._read()
            if pid == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def remove_stale_temp_files(out_dir: str | os.PathLike, quiet: bool = False) -> tuple[int, int]:
    """Delete the temp files of interrupted atomic writes in a run folder.

    Looks in the folder itself and in ``checkpoints/``, ``samples/`` and ``eval/``. Call it
    only while holding the folder's :class:`RunLock` (a live writer's temp file would be
    deleted under it otherwise).

    Returns:
        ``(files, bytes)`` removed; a one-line note goes to stderr unless ``quiet``.
    """
    out = Path(out_dir)
    n = size = 0
    for d in (out, out / "checkpoints", out / "samples", out / "eval"):
        if not d.is_dir():
            continue
        for p in d.glob(TEMP_GLOB):
            if p.is_file():
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
