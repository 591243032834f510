"""A client for any OpenAI-compatible chat server (`vllm serve` and the like).

Requests of a batch run concurrently up to `max_concurrency`; each has a timeout and is retried with
exponential backoff on connection errors, timeouts, 429 and 5xx. A request that still fails comes
back as a completion with `finish_reason="error"`, so one bad request never sinks a batch.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from synth.engines.base import (
    ChatRequest,
    ChatTemplate,
    Completion,
    ContinuationRequest,
    ContinuationScore,
    EngineError,
    sampling_params,
)
from synth.schemas import OpenAIEngineConfig

log = logging.getLogger(__name__)

_RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class OpenAIEngine:
    """Talks to `{base_url}/chat/completions` with structured output through `response_format`;
    raw prompts go to `{base_url}/completions`, which applies no chat template."""

    def __init__(self, config: OpenAIEngineConfig, transport: httpx.BaseTransport | None = None) -> None:
        self.config = config
        self.model_name = config.model
        headers = {}
        if key := os.environ.get(config.api_key_env):
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.Client(
            base_url=config.base_url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(config.timeout_s, connect=min(10.0, config.timeout_s)),
            limits=httpx.Limits(max_connections=config.max_concurrency),
            transport=transport,
        )
        self._pool = ThreadPoolExecutor(max_workers=config.max_concurrency, thread_name_prefix="openai")

    def _body(self, request: ChatRequest) -> dict[str, Any]:
        messages = [m.model_dump() for m in request.messages]
        body: dict[str, Any] = {
            "model": self.config.model,
            **({"prompt": request.raw} if request.raw is not None else {"messages": messages}),
            **sampling_params(request, self.config.sampling),
        }
        if request.prefill is not None:
            # vLLM's server extension for continuing the assistant's turn.
            messages.append({"role": "assistant", "content": request.prefill})
            body["continue_final_message"] = True
            body["add_generation_prompt"] = False
        if request.stop:
            body["stop"] = request.stop
        if request.json_schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "reply", "schema": request.json_schema, "strict": True},
            }
        return body

    def _post(self, path: str, body: dict[str, Any]) -> httpx.Response | str:
        """The server's answer to `body` (retried on connection errors, timeouts, 429 and 5xx), or
        the last error as text."""
        last_error = ""
        for attempt in range(self.config.max_retries + 1):
            if attempt:
                time.sleep(self.config.backoff_s * 2 ** (attempt - 1))
            try:
                response = self._client.post(path, json=body)
            except httpx.RequestError as e:  # connection, timeout, protocol and decoding errors
                last_error = f"{type(e).__name__}: {e}"
                continue
            if response.status_code in _RETRY_STATUS:
                last_error = f"HTTP {response.status_code}: {response.text[:200]}"
                continue
            return response
        log.warning("request failed after %d attempts: %s", self.config.max_retries + 1, last_error)
        return last_error

    def _one(self, request: ChatRequest) -> Completion:
        body = self._body(request)
        response = self._post("/completions" if request.raw is not None else "/chat/completions", body)
        if isinstance(response, str):
            return Completion(text="", finish_reason="error", error=response)
        if response.status_code >= 400:
            error = f"HTTP {response.status_code}: {response.text[:500]}"
            if request.prefill is not None and response.status_code in (400, 422):
                # The prompt continues an assistant message: only servers with vLLM's
                # continue_final_message extension do that; say so rather than leave a bare 400.
                error = (
                    "the server refused to continue an assistant message (vLLM's continue_final_message "
                    f"extension; other servers do not continue a prefilled reply): {error}"
                )
            return Completion(text="", finish_reason="error", error=error)
        try:
            data = response.json()
            choice = data["choices"][0]
            usage = data.get("usage") or {}
            reason = choice.get("finish_reason")
            text = choice["text"] if request.raw is not None else choice["message"].get("content")
            return Completion(
                text=text or "",
                finish_reason="length" if reason == "length" else "stop",
                prompt_tokens=usage.get("prompt_tokens") or 0,
                completion_tokens=usage.get("completion_tokens") or 0,
            )
        except (ValueError, KeyError, IndexError, TypeError) as e:
            return Completion(text="", finish_reason="error", error=f"malformed reply: {e!r}: {response.text[:300]}")

    def _score_one(self, request: ContinuationRequest) -> ContinuationScore:
        """`/completions` with `echo` and `logprobs`: the prompt's tokens come back with their
        log-probabilities and character offsets; those starting at or after the context's end are
        the continuation's. The server tokenizes the joined text, so a token that straddles the
        boundary counts as the continuation's."""
        body = {
            "model": self.config.model,
            "prompt": request.context + request.continuation,
            "max_tokens": 1,
            "temperature": 0.0,
            "echo": True,
            "logprobs": 0,
        }
        response = self._post("/completions", body)
        if isinstance(response, str):
            return ContinuationScore(error=response)
        if response.status_code >= 400:
            return ContinuationScore(error=f"HTTP {response.status_code}: {response.text[:500]}")
        try:
            data = response.json()
            logprobs = data["choices"][0]["logprobs"]
            usage = data.get("usage") or {}
            generated = int(usage.get("completion_tokens") or 1)
            values = logprobs["token_logprobs"][:-generated] if generated else logprobs["token_logprobs"]
            offsets = logprobs["text_offset"][: len(values)]
            start = len(request.context)
            scored = [float(v) for v, at in zip(values, offsets, strict=True) if at >= start and v is not None]
        except (ValueError, KeyError, IndexError, TypeError) as e:
            return ContinuationScore(error=f"malformed reply: {e!r}: {response.text[:300]}")
        if request.max_tokens is not None:
            scored = scored[: request.max_tokens]
        if not scored:
            return ContinuationScore(error="no continuation token in the reply")
        return ContinuationScore(logprobs=scored, prompt_tokens=int(usage.get("prompt_tokens") or 0))

    def score_continuations(self, requests: Sequence[ContinuationRequest]) -> list[ContinuationScore]:
        """Each continuation's token log-probabilities, the requests run concurrently."""
        return list(self._pool.map(self._score_one, requests))

    def chat_template(self) -> ChatTemplate | None:
        """The chat template of the tokenizer folder the config names (`tokenizer`), if any: a
        server applies its template itself, so raw prompts need a local copy of it."""
        if not self.config.tokenizer:
            return None
        from transformers import AutoTokenizer

        return ChatTemplate(AutoTokenizer.from_pretrained(self.config.tokenizer, local_files_only=True))

    def chat(self, requests: Sequence[ChatRequest]) -> list[Completion]:
        results = list(self._pool.map(self._one, requests))
        if results and all(r.finish_reason == "error" and r.error and "ConnectError" in r.error for r in results):
            raise EngineError(f"cannot reach the model server at {self.config.base_url}: {results[0].error}")
        return results

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        self._client.close()
