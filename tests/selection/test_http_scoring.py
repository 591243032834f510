"""IFD and embeddings over HTTP against mock OpenAI-compatible servers (httpx.MockTransport):
`/v1/completions` with echo and logprobs, and `/v1/embeddings`."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from synth.engines.base import ContinuationRequest, EngineError
from synth.engines.openai_http import OpenAIEngine
from synth.schemas import OpenAIEngineConfig
from synth.schemas.selection import OpenAIEmbeddingConfig
from synth.selection.embeddings import OpenAIEmbedder


def echo_server(seen: list[dict]):
    """Tokens are characters pairs; each gets log-probability -0.5, the generated token -9."""

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        text = body["prompt"]
        tokens = [text[i : i + 2] for i in range(0, len(text), 2)]
        offsets = list(range(0, len(text), 2))
        logprobs = [None] + [-0.5] * (len(tokens) - 1) + [-9.0]
        reply = {
            "choices": [{"text": text + "!", "logprobs": {"tokens": [*tokens, "!"], "token_logprobs": logprobs,
                                                         "text_offset": [*offsets, len(text)]}}],
            "usage": {"prompt_tokens": len(tokens), "completion_tokens": 1},
        }  # fmt: skip
        return httpx.Response(200, json=reply)

    return handle


def engine(handler) -> OpenAIEngine:
    config = OpenAIEngineConfig(model="m", base_url="http://test/v1", max_retries=0)
    return OpenAIEngine(config, transport=httpx.MockTransport(handler))


def test_completions_echo_scores_only_the_continuation_tokens():
    seen: list[dict] = []
    [score] = engine(echo_server(seen)).score_continuations([ContinuationRequest(context="abcd", continuation="efgh")])
    assert seen[0]["echo"] is True and seen[0]["logprobs"] == 0 and seen[0]["prompt"] == "abcdefgh"
    assert score.logprobs == [-0.5, -0.5] and score.error is None  # "ef", "gh": not the generated token
    [cut] = engine(echo_server([])).score_continuations(
        [ContinuationRequest(context="ab", continuation="cdefgh", max_tokens=1)]
    )
    assert cut.logprobs == [-0.5]


def test_a_server_error_is_a_failed_score_not_an_exception():
    [score] = engine(lambda r: httpx.Response(400, text="no echo here")).score_continuations(
        [ContinuationRequest(context="a", continuation="b")]
    )
    assert score.logprobs == [] and "HTTP 400" in score.error


def test_embeddings_come_back_in_input_order():
    def handle(request: httpx.Request) -> httpx.Response:
        texts = json.loads(request.content)["input"]
        data = [{"index": i, "embedding": [float(len(t)), 1.0]} for i, t in enumerate(texts)]
        return httpx.Response(200, json={"data": list(reversed(data))})

    embedder = OpenAIEmbedder(OpenAIEmbeddingConfig(model="e", base_url="http://test/v1"), httpx.MockTransport(handle))
    np.testing.assert_array_equal(embedder.embed(["a", "abc"]), [[1.0, 1.0], [3.0, 1.0]])


def test_an_embedding_server_that_refuses_is_an_engine_error():
    embedder = OpenAIEmbedder(OpenAIEmbeddingConfig(model="e", base_url="http://test/v1", max_retries=0),
                              httpx.MockTransport(lambda r: httpx.Response(404, text="nope")))  # fmt: skip
    with pytest.raises(EngineError, match="HTTP 404"):
        embedder.embed(["a"])
