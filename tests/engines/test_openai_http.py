"""OpenAIEngine against an in-process mock server (httpx.MockTransport): request bodies, reply
mapping, retries, bounded concurrency, ordering, unreachable servers and the API key."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from synth.engines import ChatRequest, EngineError
from synth.engines.openai_http import OpenAIEngine
from synth.schemas import Message, OpenAIEngineConfig, Sampling

Handler = Callable[[httpx.Request], httpx.Response]


def ok_reply(
    text: str = "hello", finish_reason: str = "stop", prompt_tokens: int = 7, completion_tokens: int = 3
) -> dict:
    return {
        "id": "cmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def request(content: str = "hi", **kwargs) -> ChatRequest:
    return ChatRequest(messages=[Message(role="user", content=content)], **kwargs)


def user_text(http_request: httpx.Request) -> str:
    body = json.loads(http_request.content)
    return next(m["content"] for m in body["messages"] if m["role"] == "user")


@pytest.fixture
def make_engine() -> Iterator[Callable[..., OpenAIEngine]]:
    engines: list[OpenAIEngine] = []

    def make(handler: Handler, **config) -> OpenAIEngine:
        config.setdefault("model", "m")
        config.setdefault("backoff_s", 0)
        engine = OpenAIEngine(OpenAIEngineConfig(**config), transport=httpx.MockTransport(handler))
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close()


# --- request body ---------------------------------------------------------------------------


def test_request_body_carries_messages_sampling_stop_and_json_schema(make_engine):
    seen: list[httpx.Request] = []

    def handler(r: httpx.Request) -> httpx.Response:
        seen.append(r)
        return httpx.Response(200, json=ok_reply())

    schema = {
        "type": "object",
        "properties": {"classification": {"enum": ["yes", "no"]}},
        "required": ["classification"],
    }
    messages = [Message(role="system", content="be brief"), Message(role="user", content="Is this a question?")]
    sampling = Sampling(temperature=0.3, top_p=0.8, max_tokens=17, seed=1234)
    engine = make_engine(handler, model="my-model")
    engine.chat([ChatRequest(messages=messages, sampling=sampling, json_schema=schema, stop=["\n\n", "END"])])

    assert len(seen) == 1
    assert seen[0].method == "POST"
    assert seen[0].url.path.endswith("/chat/completions")
    body = json.loads(seen[0].content)
    assert body["model"] == "my-model"
    assert body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "Is this a question?"},
    ]
    assert body["temperature"] == 0.3
    assert body["top_p"] == 0.8
    assert body["max_tokens"] == 17
    assert body["seed"] == 1234
    assert body["stop"] == ["\n\n", "END"]
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"] == schema
    # A plain request does not continue an assistant turn.
    assert "continue_final_message" not in body
    assert body["messages"][-1]["role"] == "user"


def test_request_with_prefill_appends_assistant_turn_and_asks_to_continue_it(make_engine):
    bodies: list[dict] = []

    def handler(r: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(r.content))
        return httpx.Response(200, json=ok_reply())

    engine = make_engine(handler)
    engine.chat([request("List tasks.", prefill="Task 9:")])

    body = bodies[0]
    assert body["messages"][0] == {"role": "user", "content": "List tasks."}
    assert body["messages"][-1] == {"role": "assistant", "content": "Task 9:"}
    assert len(body["messages"]) == 2
    assert body["continue_final_message"] is True
    assert body["add_generation_prompt"] is False


def test_request_without_schema_or_seed_omits_response_format_and_seed(make_engine):
    bodies: list[dict] = []

    def handler(r: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(r.content))
        return httpx.Response(200, json=ok_reply())

    make_engine(handler).chat([request(sampling=Sampling(seed=None))])
    assert "response_format" not in bodies[0]
    assert "seed" not in bodies[0]


# --- reply mapping --------------------------------------------------------------------------


def test_completion_maps_text_finish_reason_and_token_counts(make_engine):
    def handler(r: httpx.Request) -> httpx.Response:
        if user_text(r) == "long":
            return httpx.Response(200, json=ok_reply("cut off", "length", prompt_tokens=11, completion_tokens=5))
        return httpx.Response(200, json=ok_reply("done", "stop", prompt_tokens=4, completion_tokens=2))

    long, short = make_engine(handler).chat([request("long"), request("short")])
    assert (long.text, long.finish_reason, long.prompt_tokens, long.completion_tokens) == ("cut off", "length", 11, 5)
    assert (short.text, short.finish_reason, short.prompt_tokens, short.completion_tokens) == ("done", "stop", 4, 2)
    assert long.error is None and short.error is None


def test_malformed_reply_becomes_error_completion(make_engine):
    def handler(r: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"choices": []})

    (completion,) = make_engine(handler).chat([request()])
    assert completion.finish_reason == "error"
    assert completion.error


# --- retries --------------------------------------------------------------------------------


def test_503_twice_then_200_is_retried_into_one_good_completion(make_engine):
    calls = []

    def handler(r: httpx.Request) -> httpx.Response:
        calls.append(r)
        if len(calls) <= 2:
            return httpx.Response(503, text="overloaded")
        return httpx.Response(200, json=ok_reply("finally"))

    completions = make_engine(handler, max_retries=4).chat([request()])
    assert len(completions) == 1
    assert completions[0].finish_reason == "stop"
    assert completions[0].text == "finally"
    assert len(calls) == 3


def test_400_is_not_retried_and_becomes_error_with_status(make_engine):
    calls = []

    def handler(r: httpx.Request) -> httpx.Response:
        calls.append(r)
        return httpx.Response(400, text="bad request: unknown field")

    (completion,) = make_engine(handler, max_retries=4).chat([request()])
    assert len(calls) == 1
    assert completion.finish_reason == "error"
    assert "400" in completion.error
    assert completion.text == ""


def test_exhausting_retries_gives_error_after_max_retries_plus_one_attempts(make_engine):
    calls = []

    def handler(r: httpx.Request) -> httpx.Response:
        calls.append(r)
        return httpx.Response(503, text="still overloaded")

    (completion,) = make_engine(handler, max_retries=2).chat([request()])
    assert len(calls) == 3
    assert completion.finish_reason == "error"
    assert "503" in completion.error


def test_one_failed_request_does_not_sink_the_batch(make_engine):
    def handler(r: httpx.Request) -> httpx.Response:
        if user_text(r) == "bad":
            return httpx.Response(422, text="nope")
        return httpx.Response(200, json=ok_reply(f"answer to {user_text(r)}"))

    out = make_engine(handler).chat([request("a"), request("bad"), request("c")])
    assert [c.finish_reason for c in out] == ["stop", "error", "stop"]
    assert out[0].text == "answer to a" and out[2].text == "answer to c"


# --- concurrency and ordering ---------------------------------------------------------------


def test_concurrency_is_bounded_by_max_concurrency_but_above_one(make_engine):
    lock = threading.Lock()
    active = 0
    peak = 0

    def handler(r: httpx.Request) -> httpx.Response:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.05)
        with lock:
            active -= 1
        return httpx.Response(200, json=ok_reply(user_text(r)))

    out = make_engine(handler, max_concurrency=3).chat([request(f"q{i}") for i in range(12)])
    assert len(out) == 12
    assert all(c.finish_reason == "stop" for c in out)
    assert 1 < peak <= 3


def test_results_come_back_in_request_order_when_handlers_finish_out_of_order(make_engine):
    """Request i waits until request i+1 has finished, so handlers finish last-to-first."""
    n = 5
    done = [threading.Event() for _ in range(n)]
    finished: list[int] = []
    lock = threading.Lock()

    def handler(r: httpx.Request) -> httpx.Response:
        i = int(user_text(r).removeprefix("q"))
        if i + 1 < n:
            assert done[i + 1].wait(timeout=10), "requests did not run concurrently"
        with lock:
            finished.append(i)
        done[i].set()
        return httpx.Response(200, json=ok_reply(f"answer {i}"))

    out = make_engine(handler, max_concurrency=n).chat([request(f"q{i}") for i in range(n)])
    assert finished == list(reversed(range(n)))  # they really finished out of order
    assert [c.text for c in out] == [f"answer {i}" for i in range(n)]


# --- unreachable server ---------------------------------------------------------------------


def test_every_request_failing_to_connect_raises_engine_error_naming_base_url(make_engine):
    def handler(r: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=r)

    engine = make_engine(handler, base_url="http://gpu-box.invalid:8123/v1", max_retries=1)
    with pytest.raises(EngineError) as e:
        engine.chat([request("a"), request("b")])
    assert "http://gpu-box.invalid:8123/v1" in str(e.value)


def test_connect_error_on_some_requests_only_gives_error_completions_not_engine_error(make_engine):
    def handler(r: httpx.Request) -> httpx.Response:
        if user_text(r) == "down":
            raise httpx.ConnectError("connection refused", request=r)
        return httpx.Response(200, json=ok_reply("fine"))

    out = make_engine(handler, max_retries=1).chat([request("down"), request("up")])
    assert out[0].finish_reason == "error" and "ConnectError" in out[0].error
    assert out[1].finish_reason == "stop" and out[1].text == "fine"


def test_connect_errors_are_retried(make_engine):
    calls = []

    def handler(r: httpx.Request) -> httpx.Response:
        calls.append(r)
        if len(calls) == 1:
            raise httpx.ConnectError("connection refused", request=r)
        return httpx.Response(200, json=ok_reply("back"))

    (completion,) = make_engine(handler, max_retries=2).chat([request()])
    assert completion.text == "back"
    assert len(calls) == 2


def test_undecodable_reply_body_becomes_error_completion_instead_of_raising(make_engine):
    def handler(r: httpx.Request) -> httpx.Response:
        if user_text(r) == "broken":
            return httpx.Response(200, headers={"content-encoding": "gzip"}, content=b"this is not gzip")
        return httpx.Response(200, json=ok_reply("fine"))

    out = make_engine(handler, max_retries=0).chat([request("broken"), request("ok")])
    assert out[0].finish_reason == "error"
    assert out[1].text == "fine"


# --- API key --------------------------------------------------------------------------------


def test_api_key_is_read_from_named_env_var_and_sent_as_bearer(make_engine, monkeypatch):
    monkeypatch.setenv("SYNTH_TEST_KEY", "sk-secret-123")
    headers: list[httpx.Headers] = []

    def handler(r: httpx.Request) -> httpx.Response:
        headers.append(r.headers)
        return httpx.Response(200, json=ok_reply())

    make_engine(handler, api_key_env="SYNTH_TEST_KEY").chat([request()])
    assert headers[0]["authorization"] == "Bearer sk-secret-123"


def test_no_authorization_header_when_the_key_env_var_is_unset(make_engine, monkeypatch):
    monkeypatch.delenv("SYNTH_TEST_KEY_UNSET", raising=False)
    headers: list[httpx.Headers] = []

    def handler(r: httpx.Request) -> httpx.Response:
        headers.append(r.headers)
        return httpx.Response(200, json=ok_reply())

    make_engine(handler, api_key_env="SYNTH_TEST_KEY_UNSET").chat([request()])
    assert "authorization" not in headers[0]


def test_request_without_sampling_takes_the_engine_config_defaults():
    bodies: list[dict] = []

    def handler(http_request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(http_request.content))
        return httpx.Response(200, json={"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}]})

    defaults = Sampling(temperature=0.2, top_p=0.8, max_tokens=77)
    engine = OpenAIEngine(OpenAIEngineConfig(model="m", sampling=defaults), transport=httpx.MockTransport(handler))
    engine.chat([ChatRequest(messages=[Message(role="user", content="hi")])])
    assert (bodies[0]["temperature"], bodies[0]["top_p"], bodies[0]["max_tokens"]) == (0.2, 0.8, 77)


def test_a_raw_prompt_goes_to_the_completions_endpoint_without_a_chat_template(make_engine):
    seen: list[tuple[str, dict]] = []

    def handler(http_request: httpx.Request) -> httpx.Response:
        seen.append((http_request.url.path, json.loads(http_request.content)))
        reply = {"choices": [{"index": 0, "text": " How do tides work?", "finish_reason": "stop"}], "usage": {}}
        return httpx.Response(200, json=reply)

    engine = make_engine(handler)
    [completion] = engine.chat([ChatRequest(raw="<|im_start|>user\n", stop=["\n"], sampling=Sampling(seed=3))])
    assert completion.text == " How do tides work?" and completion.finish_reason == "stop"
    [(path, body)] = seen
    assert path.endswith("/completions") and not path.endswith("/chat/completions")
    assert body["prompt"] == "<|im_start|>user\n" and "messages" not in body
    assert body["stop"] == ["\n"] and body["seed"] == 3
