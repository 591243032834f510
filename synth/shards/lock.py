"""The dataset's writer lock: one writer at a time holds `DIR/.lock`, which names the holder; a
second one fails at once naming the holder, or waits for it when asked to."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import IO

from synth.shards.layout import LOCK, DatasetBusyError, DatasetError


def _holder(lock_file: Path) -> str:
    try:
        info = json.loads(lock_file.read_text())
        return f"run {info.get('run', '?')}, pid {info.get('pid', '?')} on {info.get('host', '?')}"
    except (OSError, ValueError):
        return "another process"


def acquire_lock(path: Path, wait: float | None = 0, holder: str = "") -> IO[str]:
    """Take the dataset's writer lock (`DIR/.lock`, which then names the holder). `wait`: seconds
    to wait for the current holder (0: fail at once naming it; None: no limit)."""
    lock_file = path / LOCK
    if lock_file.is_symlink():
        raise DatasetError(f"{lock_file}: is a symlink; refusing to use it as the writer lock")
    lock = open(lock_file, "a+")  # noqa: SIM115 - held until release_lock
    deadline = None if wait is None else time.monotonic() + wait
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if deadline is not None and time.monotonic() >= deadline:
                lock.close()
                waited = f" after waiting {wait:g} s" if wait else ""
                raise DatasetBusyError(
                    f"{path}: another writer holds this dataset ({_holder(lock_file)}){waited}; "
                    "wait for it to finish, or pass --wait SECONDS"
                ) from None
            time.sleep(0.2)
    lock.seek(0)
    lock.truncate()
    lock.write(json.dumps({"run": holder or "?", "pid": os.getpid(), "host": socket.gethostname()}))
    lock.flush()
    return lock


def release_lock(lock: IO[str]) -> None:
    fcntl.flock(lock, fcntl.LOCK_UN)
    lock.close()
