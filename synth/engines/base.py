"""The one interface every model backend speaks: a batch of chat requests in, completions out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field

from synth.schemas import Message, Sampling


class ChatRequest(BaseModel):
    """One conversation to complete.

    `sampling` left empty takes the engine config's defaults. `json_schema` asks for structured output (the reply is JSON valid against it). `prefill` starts
    the assistant's reply with the given text and lets the model continue it (the completion holds
    only the continuation); this is how a chat model continues a numbered list. `tag` names the
    prompt template the request came from; engines ignore it, scripted engines route on it.
    """

    messages: list[Message]
    sampling: Sampling | None = None  # None: the engine config's sampling defaults
    json_schema: dict[str, Any] | None = None
    prefill: str | None = None
    stop: list[str] = Field(default_factory=list)
    tag: str = ""


FinishReason = Literal["stop", "length", "error"]


class Completion(BaseModel):
    """What came back for one request. `finish_reason == "error"` carries the error in `error`."""

    text: str
    finish_reason: FinishReason = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None


class Engine(Protocol):
    """A model backend. `chat` returns one completion per request, in order, and never raises
    for a single failed request: that request comes back with `finish_reason="error"`."""

    model_name: str

    def chat(self, requests: Sequence[ChatRequest]) -> list[Completion]: ...

    def close(self) -> None: ...


class EngineError(RuntimeError):
    """The engine as a whole cannot serve (model missing, server unreachable)."""


class EngineConfigError(ValueError):
    """An engine config names something that is not there (a responder, a model folder, a URL);
    the message starts with the key."""
