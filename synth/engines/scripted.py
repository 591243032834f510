"""A scripted engine: replies come from a function of the request, for tests and dry runs."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from synth.engines.base import ChatRequest, ChatTemplate, Completion

Responder = Callable[[ChatRequest], "str | Completion"]


def _echo(request: ChatRequest) -> str:
    return request.messages[-1].content if request.messages else request.raw or ""


class ScriptedEngine:
    """Answers each request with `responder(request)`; records every request it saw.

    A string reply becomes a completion that finished normally; return a `Completion` to script a
    truncated reply (`finish_reason="length"`) or a failure (`"error"`).
    """

    def __init__(
        self, responder: Responder = _echo, model_name: str = "scripted", template: ChatTemplate | None = None
    ) -> None:
        self.responder = responder
        self.model_name = model_name
        self.template = template
        self.calls: list[list[ChatRequest]] = []

    def chat_template(self) -> ChatTemplate | None:
        """The chat template given to it, if any (Magpie tests script one)."""
        return self.template

    def chat(self, requests: Sequence[ChatRequest]) -> list[Completion]:
        self.calls.append(list(requests))
        out = []
        for request in requests:
            reply = self.responder(request)
            if isinstance(reply, str):
                reply = Completion(text=reply, completion_tokens=len(reply.split()))
            out.append(reply)
        return out

    def close(self) -> None:
        pass
