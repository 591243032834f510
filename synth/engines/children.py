"""The processes vLLM starts for an engine (its engine core and workers): found as they start,
killed with this process if it dies, and awaited when the engine closes."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from typing import Any

# Run by a watcher process: wait until the engine's process is gone (its end of the pipe closes),
# then kill the processes vLLM started for it, each only if it is still the same process.
_WATCHER = """
import sys, psutil
sys.stdin.buffer.read()
for item in sys.argv[1:]:
    pid, started = item.split("@")
    try:
        p = psutil.Process(int(pid))
        if abs(p.create_time() - float(started)) < 0.01:
            p.kill()
    except psutil.Error:
        pass
"""


def watch_children() -> subprocess.Popen | None:
    """Make sure the processes vLLM started for this one die with it.

    vLLM's engine core and workers are separate processes. When this process is killed (SIGKILL,
    the OOM killer) they stay alive holding the model's memory (seen: still running a minute
    after), so a resumed run would load a second copy beside them. A small watcher holds a pipe
    from this process and kills them when the pipe closes. Stop it (`kill()`) before shutting
    vLLM down normally."""
    import psutil

    children = psutil.Process().children(recursive=True)
    if not children:
        return None
    args = [f"{c.pid}@{c.create_time()}" for c in children]
    return subprocess.Popen(
        [sys.executable, "-c", _WATCHER, *args], stdin=subprocess.PIPE, start_new_session=True, close_fds=True
    )


def trees(children: list[Any]) -> list[Any]:
    """The processes `children` (multiprocessing's) and their descendants, as psutil processes
    (which remember their start time); not multiprocessing's resource tracker, which this
    process shares with every other user of multiprocessing."""
    import psutil

    found = []
    for child in children:
        with contextlib.suppress(psutil.Error):
            process = psutil.Process(child.pid)
            found += [process, *process.children(recursive=True)]
    return found


def ended(processes: list[Any], timeout: float = 10.0) -> bool:
    """Whether an engine's `processes` have all ended within `timeout` seconds (after its shutdown
    asked them to). vLLM's shutdown can return while its engine core is still exiting. An ended
    child is left for multiprocessing to collect (waiting on it here would take its exit status
    from multiprocessing, which would then count it as running for good)."""
    deadline = time.monotonic() + timeout
    alive = [p for p in processes if running(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if running(p)]
    return not alive


def running(process: Any) -> bool:
    """Whether `process` (psutil's) still runs: not gone, and not ended waiting to be collected."""
    import psutil

    try:
        return bool(process.is_running()) and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
