"""Files written whole or not at all: :func:`atomic_write_bytes` and :class:`DiskFull`.

Every file semsynth writes (checkpoints, configs, exports, images, reports, manifests) goes
through :func:`atomic_write_bytes`, so a crash or a full disk never leaves a partial file.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

from semsynth.types import SemsynthError

__all__ = ["DiskFull", "atomic_write_bytes"]


class DiskFull(SemsynthError, OSError):
    """No space left while writing a file; the previous version of the file is intact.

    The message names the file, the bytes needed and the bytes free on its file system.
    """

    def __str__(self) -> str:
        return str(self.strerror)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a temp file in the same folder, then rename.

    A crash at any moment leaves either the old file or the new one, never a partial file
    (a SIGKILL between write and rename can leave the temp file ``.<name>.*.tmp``; the
    trainer removes those, see :mod:`semsynth.train.runfolder`).

    Raises:
        DiskFull: the file system ran out of space (``ENOSPC``/``EDQUOT``); the temp file is
            removed and ``path`` keeps its previous content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = ""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)
        if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            free = shutil.disk_usage(path.parent).free
            raise DiskFull(exc.errno, f"no space left on the device to write {path}: it needs {len(data):,} bytes, "
                                      f"{free:,} are free; the previous {path.name} (if any) is intact") from None
        raise
    except BaseException:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)
        raise
