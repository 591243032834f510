"""Talking to models. Generators and judges reach a model only through `Engine.chat`.

`get_engine(config)` builds the engine a config names and keeps it for the life of the process, so
a model is loaded once per worker however many batches or flows use it.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from synth.engines.base import ChatRequest, Completion, Engine, EngineConfigError, EngineError
from synth.engines.scripted import ScriptedEngine
from synth.schemas import EngineConfig, OpenAIEngineConfig, ScriptedEngineConfig, VLLMEngineConfig

__all__ = [
    "ChatRequest",
    "Completion",
    "Engine",
    "EngineConfigError",
    "EngineError",
    "ScriptedEngine",
    "check_engine",
    "close_bounded",
    "close_engines",
    "engines_opened",
    "get_engine",
    "held_engines",
    "load_responder",
    "second_engine",
]

log = logging.getLogger(__name__)

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


def second_engine(live: Engine | None, config: EngineConfig | None) -> Engine | None:
    """A run's second engine (a target, a student, a backward model): `live` where a test gives
    one, else the engine `config` names; None where neither is given (the run's engine serves)."""
    if live is not None or config is None:
        return live
    return get_engine(config)


def _build(config: EngineConfig) -> Engine:
    if isinstance(config, VLLMEngineConfig):
        from synth.engines.vllm_local import VLLMEngine

        return VLLMEngine(config)
    if isinstance(config, OpenAIEngineConfig):
        from synth.engines.openai_http import OpenAIEngine

        return OpenAIEngine(config)
    if isinstance(config, ScriptedEngineConfig):
        if config.responder is None:
            return ScriptedEngine(model_name=config.model, keep_calls=False)
        return ScriptedEngine(load_responder(config.responder)(), model_name=config.model, keep_calls=False)
    raise TypeError(f"unknown engine config {type(config).__name__}")


def load_responder(spec: str) -> Callable[[], Any]:
    """The factory a scripted engine's `responder` ('module:attribute') names; EngineConfigError
    naming the key when it does not import or is not callable."""
    module, _, attribute = spec.partition(":")
    try:
        make = getattr(importlib.import_module(module), attribute)
    except AttributeError:
        raise EngineConfigError(f"responder: module {module!r} has no attribute {attribute!r}") from None
    except Exception as e:  # whatever importing the module raised
        raise EngineConfigError(f"responder: cannot import {module!r} ({type(e).__name__}: {e})") from None
    if not callable(make):
        raise EngineConfigError(f"responder: {spec!r} is not callable")
    return make  # type: ignore[no-any-return]


def _looks_like_path(model: str) -> bool:
    return model.startswith(("/", "./", "../", "~")) or (os.sep != "/" and os.sep in model)


def check_engine(config: EngineConfig, timeout: float = 5.0) -> None:
    """Fail at once on what would otherwise fail only after a run has started: a scripted
    responder that does not import, a local model folder that is not there, an OpenAI-compatible
    server that does not answer. Loads no model.

    Raises EngineConfigError (the config names something that is not there) or EngineError (the
    server does not answer); both messages start with the config key."""
    if isinstance(config, ScriptedEngineConfig) and config.responder:
        load_responder(config.responder)
    elif isinstance(config, VLLMEngineConfig) and config.model and _looks_like_path(config.model):
        if not Path(config.model).expanduser().is_dir():
            raise EngineConfigError(f"model: {config.model}: no such folder (a local model folder, or a model name)")
    elif isinstance(config, OpenAIEngineConfig):
        import httpx

        url = f"{config.base_url.rstrip('/')}/models"
        try:
            httpx.get(url, timeout=timeout)  # any HTTP answer will do: the server is up
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as e:
            raise EngineConfigError(f"base_url: {config.base_url!r} is not an http(s) URL ({e})") from None
        except httpx.RequestError as e:
            raise EngineError(
                f"base_url: the model server at {config.base_url} does not answer ({type(e).__name__}: {e}); "
                "start it or correct base_url"
            ) from None


# How long closing one engine may take before its processes are killed. vLLM's own shutdown
# stops its engine core within a few seconds; one that does not answer would otherwise keep a
# finished command from exiting (Python's exit joins the engine's processes without a limit).
CLOSE_TIMEOUT_S = 10.0


def held_engines() -> frozenset[str]:
    """The keys of the engines this process holds now (for `close_engines(keep=...)`)."""
    with _lock:
        return frozenset(_engines)


def close_engines(keep: Collection[str] = (), timeout: float = CLOSE_TIMEOUT_S) -> None:
    """Release every engine this process holds (frees the model's memory), but those whose keys
    are in `keep` (from `held_engines`). Each gets `timeout` seconds to close; one that takes
    longer, or fails to close, has its processes killed (`close_bounded`)."""
    with _lock:
        closing = [_engines.pop(key) for key in list(_engines) if key not in keep]
    for engine in closing:
        close_bounded(engine, timeout)


def close_bounded(engine: Engine, timeout: float = CLOSE_TIMEOUT_S) -> None:
    """`engine.close()`, waiting at most `timeout` seconds; if it has not finished by then, or
    failed, or the wait is interrupted (Ctrl-C), the engine's processes are killed (its `kill()`,
    for engines that start processes). A close that hangs is left behind in a daemon thread, which
    never holds up the interpreter's exit."""
    done = threading.Event()
    failure: list[BaseException] = []

    def close() -> None:
        try:
            engine.close()
        except BaseException as e:  # reported below; the engine is killed instead
            failure.append(e)
        finally:
            done.set()

    threading.Thread(target=close, name=f"close {getattr(engine, 'model_name', 'engine')}", daemon=True).start()
    try:
        finished = done.wait(timeout)
    except BaseException:
        _kill(engine)
        raise
    if finished and not failure:
        return
    why = f"failed ({type(failure[0]).__name__}: {failure[0]})" if failure else f"took over {timeout:.0f} s"
    log.warning("closing the engine for %s %s; killing its processes", getattr(engine, "model_name", "?"), why)
    _kill(engine)


def _kill(engine: Engine) -> None:
    kill = getattr(engine, "kill", None)
    if callable(kill):
        kill()


@contextmanager
def engines_opened(timeout: float = CLOSE_TIMEOUT_S) -> Iterator[None]:
    """Close, on leaving, the engines first built inside the block, and only those: an engine the
    caller (a notebook, a test session, an outer flow) already held stays open for it."""
    before = held_engines()
    try:
        yield
    finally:
        close_engines(keep=before, timeout=timeout)
