"""A scripted judge whose engine, like vLLM's, keeps a child process that waits for work: what a
command must stop before it can exit. Imported by the commands that `test_exits` runs."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path


def judge_keeping_a_child():
    """The responder factory (`responder = "tests.cli.child_engine:judge_keeping_a_child"`): starts
    a non-daemon child process (its pid goes to `CHILD_PID_FILE`), then grades per `JUDGE_MODE`:
    ok (every record passes), fail (the engine fails), or wait (it never answers)."""
    child = multiprocessing.get_context("fork").Process(target=time.sleep, args=(3600,), name="EngineCore")
    child.start()
    marker = Path(os.environ["CHILD_PID_FILE"])
    marker.write_text(str(child.pid))
    mode = os.environ.get("JUDGE_MODE", "ok")

    def reply(request):
        if mode == "fail":
            raise RuntimeError("the model went away")
        if mode == "wait":
            marker.with_suffix(".serving").touch()
            time.sleep(3600)
        return '{"rationale": "clear and correct", "score": 5}'

    return reply
