"""Talking to models. Generators and judges reach a model only through `Engine.chat`.

`get_engine(config)` builds the engine a config names and keeps it for the life of the process, so
a model is loaded once per worker however many batches or flows use it.
"""

from __future__ import annotations

import importlib
import threading

from synth.engines.base import ChatRequest, Completion, Engine, EngineError
from synth.engines.scripted import ScriptedEngine
from synth.schemas import EngineConfig, OpenAIEngineConfig, ScriptedEngineConfig, VLLMEngineConfig

__all__ = ["ChatRequest", "Completion", "Engine", "EngineError", "ScriptedEngine", "close_engines", "get_engine"]

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def get_engine(config: EngineConfig) -> Engine:
    """The engine for `config`, created on first use and reused by every later call in this process."""
    key = config.model_dump_json()
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _build(config)
            _engines[key] = engine
        return engine


def _build(config: EngineConfig) -> Engine:
    if isinstance(config, VLLMEngineConfig):
        from synth.engines.vllm_local import VLLMEngine

        return VLLMEngine(config)
    if isinstance(config, OpenAIEngineConfig):
        from synth.engines.openai_http import OpenAIEngine

        return OpenAIEngine(config)
    if isinstance(config, ScriptedEngineConfig):
        if config.responder is None:
            return ScriptedEngine(model_name=config.model)
        module, _, attribute = config.responder.partition(":")
        make = getattr(importlib.import_module(module), attribute)
        return ScriptedEngine(make(), model_name=config.model)
    raise TypeError(f"unknown engine config {type(config).__name__}")


def close_engines() -> None:
    """Release every engine this process holds (frees the model's memory)."""
    with _lock:
        for engine in _engines.values():
            engine.close()
        _engines.clear()
