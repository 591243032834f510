"""The one interface every model backend speaks: a batch of chat requests in, completions out."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field

from synth.schemas import Message, Sampling
from synth.schemas.runs import Tokens


class ChatRequest(BaseModel):
    """One conversation to complete.

    `sampling` left empty takes the engine config's defaults. `json_schema` asks for structured output (the reply is JSON valid against it). `prefill` starts
    the assistant's reply with the given text and lets the model continue it (the completion holds
    only the continuation); this is how a chat model continues a numbered list. `tag` names the
    prompt template the request came from; engines ignore it, scripted engines route on it.
    `raw` sends a prompt exactly as given, with no chat template (the completion continues it);
    `messages` is then empty. This is how Magpie feeds a model the opening of a user turn.
    """

    messages: list[Message] = Field(default_factory=list)
    raw: str | None = None
    sampling: Sampling | None = None  # None: the engine config's sampling defaults
    json_schema: dict[str, Any] | None = None
    prefill: str | None = None
    stop: list[str] = Field(default_factory=list)
    tag: str = ""


def sampling_params(request: ChatRequest, default: Sampling) -> dict[str, Any]:
    """The request's sampling (else the engine config's `default`) as request parameters: the
    fields of `Sampling` are named as vLLM's `SamplingParams` and the OpenAI API name them; the seed
    is left out when there is none."""
    return (request.sampling or default).model_dump(exclude_none=True)


FinishReason = Literal["stop", "length", "error"]


class Completion(BaseModel):
    """What came back for one request. `finish_reason == "error"` carries the error in `error`."""

    text: str
    finish_reason: FinishReason = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None


class ContinuationRequest(BaseModel):
    """Text to score, not to continue: the log-probability of each token of `continuation` after
    `context` (a prompt already rendered, chat template included). Nothing is generated."""

    context: str
    continuation: str
    max_tokens: int | None = None  # score at most this many continuation tokens (the rest is cut)
    tag: str = ""


class ContinuationScore(BaseModel):
    """The log-probability of each scored continuation token, in order; empty with `error` set when
    the request failed."""

    logprobs: list[float] = Field(default_factory=list)
    prompt_tokens: int = 0
    error: str | None = None


_SENTINEL = "\x00SYNTH-TURN\x00"


class ChatTemplate:
    """A model's chat template (a Hugging Face tokenizer's), as text: a conversation rendered the
    way the model saw it in training, up to the opening of the next user turn."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def _render(self, messages: Sequence[Message]) -> str:
        turns = [m.model_dump() for m in messages]
        text = self.tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=False)
        return str(text)

    def pre_query(self, messages: Sequence[Message] = ()) -> str:
        """`messages` (system, then user and assistant turns) followed by the opening of a user
        turn: what the model continues with a user's message."""
        text = self._render([*messages, Message(role="user", content=_SENTINEL)])
        if _SENTINEL not in text:
            raise EngineError("the chat template does not show the user's message; it cannot open a user turn")
        return text[: text.index(_SENTINEL)]

    def end_of_turn(self) -> str:
        """The text that closes a user turn (a stop string for a sampled user message)."""
        text = self._render([Message(role="user", content=_SENTINEL)])
        return text[text.index(_SENTINEL) + len(_SENTINEL) :].strip()


class Engine(Protocol):
    """A model backend. `chat` returns one completion per request, in order, and never raises
    for a single failed request: that request comes back with `finish_reason="error"`."""

    model_name: str

    def chat(self, requests: Sequence[ChatRequest]) -> list[Completion]: ...

    def close(self) -> None: ...


def context_length(engine: object) -> int | None:
    """How many tokens the engine's model takes, prompt and reply together, where the engine knows
    (in-process vLLM: `max_model_len`); None where it does not (a server, a scripted engine)."""
    get = getattr(engine, "context_length", None)
    value = get() if callable(get) else None
    return value if isinstance(value, int) else None


# A file named here (set by `synth.flows.api.prepare_process` in quiet mode) receives what a model
# runtime's processes print while they start: native warnings and loading bars from processes this
# one starts, which Python's warning filters and log levels cannot reach.
LIBRARY_LOG_ENV = "SYNTH_LIBRARY_LOG"


@contextmanager
def output_to_library_log() -> Iterator[None]:
    """While open, this process's stdout and stderr file descriptors point at the library log (when
    one is set): processes started inside inherit them and keep writing there; this process gets
    its terminal back on leaving. Python-level output is flushed first so nothing changes place."""
    path = os.environ.get(LIBRARY_LOG_ENV)
    if not path:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(path, "ab") as log:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in zip((1, 2), saved, strict=True):
            os.dup2(copy, fd)
            os.close(copy)


class EngineError(RuntimeError):
    """The engine as a whole cannot serve (model missing, server unreachable)."""


class EngineConfigError(ValueError):
    """An engine config names something that is not there (a responder, a model folder, a URL);
    the message starts with the key."""


# Which batch the calls of this thread or task count for (None: the batch being committed).
_counting_for: ContextVar[int | None] = ContextVar("counting_for", default=None)


def add_tokens(total: Tokens | None, more: Tokens) -> Tokens:
    """Token counts ({tag: {prompt, completion}}) with `more` added, as a new table."""
    table: Tokens = {
        tag: {"prompt": v.get("prompt", 0), "completion": v.get("completion", 0)} for tag, v in (total or {}).items()
    }
    for tag, counts in more.items():
        entry = table.setdefault(tag, {"prompt": 0, "completion": 0})
        entry["prompt"] += counts.get("prompt", 0)
        entry["completion"] += counts.get("completion", 0)
    return table


class Metered:
    """An engine that counts the tokens its calls use (prompt and completion, by request tag),
    for the run's cost, and the time it spends serving them; `take` hands over what was counted
    since the last take. Failed attempts count too: their tokens were spent.

    Calls are served one at a time (a batch made ahead of its turn and the curation of the one
    before it share the engine). Calls made inside `counting_for(n)` are kept apart for batch n
    and handed over when `take` is asked for batch n."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.model_name = engine.model_name
        self.busy_seconds = 0.0  # time spent inside the engine's calls
        self._counts: dict[int | None, dict[str, list[int]]] = {}
        self._lock = threading.Lock()

    @contextmanager
    def counting_for(self, batch: int) -> Iterator[None]:
        token = _counting_for.set(batch)
        try:
            yield
        finally:
            _counting_for.reset(token)

    @contextmanager
    def _serving(self) -> Iterator[None]:
        """One call at a time, its time added to `busy_seconds` (a failed call's too)."""
        with self._lock:
            started = time.perf_counter()
            try:
                yield
            finally:
                self.busy_seconds += time.perf_counter() - started

    def _count(self, tag: str, prompt: int, completion: int) -> None:
        entry = self._counts.setdefault(_counting_for.get(), {}).setdefault(tag or "other", [0, 0])
        entry[0] += prompt
        entry[1] += completion

    def chat(self, requests: Sequence[ChatRequest]) -> list[Completion]:
        with self._serving():
            replies = self.engine.chat(requests)
            for request, reply in zip(requests, replies, strict=True):
                self._count(request.tag, reply.prompt_tokens, reply.completion_tokens)
        return replies

    def score_continuations(self, requests: Sequence[ContinuationRequest]) -> list[ContinuationScore]:
        score = getattr(self.engine, "score_continuations", None)
        if score is None:
            raise EngineError(f"the engine {self.model_name} cannot score continuations")
        with self._serving():
            scores: list[ContinuationScore] = score(requests)
            for request, result in zip(requests, scores, strict=True):
                self._count(request.tag, result.prompt_tokens, 0)
        return scores

    def chat_template(self) -> Any:
        get = getattr(self.engine, "chat_template", None)
        return get() if callable(get) else None

    def context_length(self) -> int | None:
        return context_length(self.engine)

    def take(self, into: Tokens | None = None, batch: int | None = None) -> Tokens:
        """The counts since the last take added to `into` ({tag: {prompt, completion}}), as a new
        table: those made outside `counting_for`, and those made inside `counting_for(batch)`."""
        table = add_tokens(into, {})
        with self._lock:
            taken = [self._counts.pop(None, {}), *([self._counts.pop(batch, {})] if batch is not None else [])]
        for counts in taken:
            table = add_tokens(table, {tag: {"prompt": p, "completion": c} for tag, (p, c) in counts.items()})
        return table

    def close(self) -> None:
        self.engine.close()
