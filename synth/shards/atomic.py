"""Writing a file so that readers see the old one or the whole new one, never a part."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class ReplacedNotSyncedError(OSError):
    """The new file is in place, but syncing its folder failed: readers may see it now, and it
    may or may not survive a power loss. A caller must treat the write as done, not undone."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the whole new one, never a part.
    The file gets the permissions of any file the user creates (their umask), not mkstemp's 0600.
    Any error before the new file is in place leaves the old one; an error syncing the folder
    after it is raises `ReplacedNotSyncedError`."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:
        fsync_dir(path.parent)
    except OSError as e:
        raise ReplacedNotSyncedError(e.errno, f"{path} was written, but syncing its folder failed: {e.strerror}") from e


def disk_full(error: BaseException) -> bool:
    """Whether this one error is a full disk or quota (also when a library reports the OS error
    only in its message, as Rust's io::Error does)."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(error)
    return "No space left on device" in text or "Disk quota exceeded" in text


def is_disk_full(error: BaseException | None) -> bool:
    """Whether `error`, or an error it was raised from, is a full disk (or quota)."""
    seen = 0
    while error is not None and seen < 20:
        if disk_full(error):
            return True
        error = error.__cause__ or error.__context__
        seen += 1
    return False
