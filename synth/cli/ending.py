"""A command that has finished exits, however it ended (done, an error, Ctrl-C).

vLLM runs its engine core in a child process that waits for work. Python's exit joins such a
child without a time limit, so a command that leaves its engine open prints its last line and
never returns. Flows take their engines from the process's table (`synth.engines.get_engine`) and
leave closing them to their caller: here, every command. On leaving, the engines the command
built are closed (each within `synth.engines.CLOSE_TIMEOUT_S`, then killed), and any child
process the command started that is still running (an embedding model's vLLM, say) is asked to
stop, then killed.

Nothing is imported here that the command did not import itself: `synth --help` stays fast.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

CHILD_GRACE_S = 5.0  # how long a leftover child gets to stop once asked, before it is killed


@contextmanager
def engines_released() -> Iterator[None]:
    """Close, on leaving, the engines built and the child processes started inside the block."""
    engines = sys.modules.get("synth.engines")
    held = engines.held_engines() if engines is not None else frozenset()
    children = set(_children())
    try:
        yield
    finally:
        try:
            engines = sys.modules.get("synth.engines")
            if engines is not None:
                engines.close_engines(keep=held)
        finally:
            _stop([p for p in _children() if p not in children])


def _children() -> list[Any]:
    """This process's running `multiprocessing` children (the ones Python's exit would wait on)."""
    multiprocessing = sys.modules.get("multiprocessing")
    return list(multiprocessing.active_children()) if multiprocessing is not None else []


def _stop(processes: list[Any]) -> None:
    for process in processes:
        process.terminate()
    deadline = time.monotonic() + CHILD_GRACE_S
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
    for process in processes:
        if process.is_alive():
            process.kill()
            process.join(1.0)
