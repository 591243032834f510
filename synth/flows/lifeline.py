"""Nothing outlives a killed run: a small watcher process ends this process's children with it.

A run starts helper processes: Prefect's temporary API server (a uvicorn process), vLLM's engine
core and workers. When the run is killed (SIGKILL, the OOM killer, a closed terminal) they are
not told and keep running, holding a port, memory, or a GPU. The watcher holds a pipe from this
process and, about once a second, notes its descendants; when the pipe closes (this process is
gone, however it ended) it kills each of them that is still the same process (same start time).
"""

from __future__ import annotations

import os
import subprocess
import sys

_WATCHER = """
import os, select, sys, psutil
parent = psutil.Process(int(sys.argv[1]))
me = os.getpid()
known = {}
while True:
    ready, _, _ = select.select([sys.stdin], [], [], 1.0)
    if ready and not os.read(sys.stdin.fileno(), 1 << 16):
        break
    try:
        for child in parent.children(recursive=True):
            if child.pid != me:
                known.setdefault(child.pid, child.create_time())
    except psutil.Error:
        break
for pid, started in known.items():
    try:
        process = psutil.Process(pid)
        if abs(process.create_time() - started) < 0.01:
            process.kill()
    except psutil.Error:
        pass
"""

_watcher: subprocess.Popen | None = None


def hold_lifeline() -> None:
    """Start the watcher for this process (once; later calls do nothing)."""
    global _watcher
    if _watcher is not None:
        return
    _watcher = subprocess.Popen(
        [sys.executable, "-c", _WATCHER, str(os.getpid())],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )
