"""Closing the in-process vLLM engine, without loading a model: `close()` runs its whole path
(the real watcher process, an engine core that counts its shutdowns) and a second close does
nothing. The same on a real engine, through its processes: tests/engines/test_vllm_engine.py."""

from __future__ import annotations

import subprocess
import sys

import pytest

from synth.engines import ChatRequest, EngineError
from synth.schemas import Message


class Core:
    def __init__(self) -> None:
        self.shutdowns = 0

    def shutdown(self) -> None:
        self.shutdowns += 1


class LLM:
    """What `close()` reaches of `vllm.LLM`: its engine core."""

    def __init__(self) -> None:
        self.llm_engine = type("Engine", (), {})()
        self.llm_engine.engine_core = Core()


def test_close_stops_the_watcher_and_the_engine_core_once_and_the_engine_refuses_work():
    from synth.engines.children import watch_children
    from synth.engines.vllm_local import VLLMEngine

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # as vLLM's would be
    try:
        engine = object.__new__(VLLMEngine)
        llm = LLM()
        watcher = watch_children()
        assert watcher is not None and watcher.poll() is None
        engine.model_name, engine._llm, engine._watcher, engine._processes = "some-model", llm, watcher, []
        engine.close()
        assert llm.llm_engine.engine_core.shutdowns == 1
        assert watcher.poll() is not None  # stopped first, so it does not kill what shuts down normally
        assert child.poll() is None
        engine.close()
        assert llm.llm_engine.engine_core.shutdowns == 1  # a second close does nothing
        with pytest.raises(EngineError, match="some-model was closed"):
            engine.chat([ChatRequest(messages=[Message(role="user", content="hi")])])
    finally:
        child.kill()
        child.wait(timeout=10)
