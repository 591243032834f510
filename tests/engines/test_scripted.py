"""ScriptedEngine (replies from a function) and the per-process engine cache `get_engine`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from synth.engines import ChatRequest, Completion, ScriptedEngine, close_engines, engines_opened, get_engine
from synth.schemas import Message, ScriptedEngineConfig


def request(content: str, tag: str = "") -> ChatRequest:
    return ChatRequest(messages=[Message(role="user", content=content)], tag=tag)


def test_one_completion_per_request_in_request_order():
    engine = ScriptedEngine(lambda r: r.messages[-1].content.upper())
    out = engine.chat([request("a"), request("b"), request("c")])
    assert [c.text for c in out] == ["A", "B", "C"]


def test_string_replies_become_completions_that_finished_normally():
    engine = ScriptedEngine(lambda r: "some reply text")
    (completion,) = engine.chat([request("x")])
    assert isinstance(completion, Completion)
    assert completion.text == "some reply text"
    assert completion.finish_reason == "stop"
    assert completion.error is None


def test_completion_replies_pass_through_unchanged():
    truncated = Completion(text="cut", finish_reason="length", completion_tokens=99)
    failed = Completion(text="", finish_reason="error", error="boom")
    replies = {"t": truncated, "f": failed}
    engine = ScriptedEngine(lambda r: replies[r.messages[-1].content])
    out = engine.chat([request("t"), request("f")])
    assert out[0] == truncated
    assert out[1] == failed


def test_every_batch_of_requests_is_recorded_in_calls():
    engine = ScriptedEngine(lambda r: "ok")
    first = [request("1", tag="a"), request("2", tag="b")]
    second = [request("3")]
    engine.chat(first)
    engine.chat(second)
    assert engine.calls == [first, second]


def test_default_responder_echoes_last_message():
    engine = ScriptedEngine()
    (completion,) = engine.chat(
        [ChatRequest(messages=[Message(role="system", content="sys"), Message(role="user", content="echo me")])]
    )
    assert completion.text == "echo me"


def test_empty_batch_gives_no_completions():
    assert ScriptedEngine(lambda r: "x").chat([]) == []


@pytest.fixture
def engines_closed() -> Iterator[None]:
    close_engines()
    yield
    close_engines()


def test_get_engine_reuses_the_engine_for_equal_configs(engines_closed):
    a = get_engine(ScriptedEngineConfig(model="alpha"))
    b = get_engine(ScriptedEngineConfig(model="alpha"))
    assert a is b
    assert isinstance(a, ScriptedEngine)
    assert a.model_name == "alpha"


def test_get_engine_builds_a_different_engine_for_different_configs(engines_closed):
    a = get_engine(ScriptedEngineConfig(model="alpha"))
    b = get_engine(ScriptedEngineConfig(model="beta"))
    c = get_engine(ScriptedEngineConfig(model="alpha", seed=7))
    assert a is not b
    assert a is not c
    assert b.model_name == "beta"


def test_close_engines_forgets_cached_engines(engines_closed):
    a = get_engine(ScriptedEngineConfig(model="alpha"))
    close_engines()
    assert get_engine(ScriptedEngineConfig(model="alpha")) is not a


def test_engines_opened_closes_only_the_engines_built_inside(engines_closed, monkeypatch):
    closed: list[str] = []
    monkeypatch.setattr(ScriptedEngine, "close", lambda self: closed.append(self.model_name))
    held = get_engine(ScriptedEngineConfig(model="held"))  # the caller's engine, e.g. a notebook's
    with engines_opened():
        assert get_engine(ScriptedEngineConfig(model="held")) is held
        inner = get_engine(ScriptedEngineConfig(model="inner"))
    assert closed == ["inner"]
    assert get_engine(ScriptedEngineConfig(model="held")) is held
    assert get_engine(ScriptedEngineConfig(model="inner")) is not inner
