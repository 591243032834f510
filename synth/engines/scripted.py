"""A scripted engine: replies come from a function of the request, for tests and dry runs."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from synth.engines.base import ChatRequest, ChatTemplate, Completion, ContinuationRequest, ContinuationScore

Responder = Callable[[ChatRequest], "str | Completion"]
Scorer = Callable[[ContinuationRequest], "list[float] | ContinuationScore"]


def _echo(request: ChatRequest) -> str:
    return request.messages[-1].content if request.messages else request.raw or ""


def word_logprobs(request: ContinuationRequest) -> list[float]:
    """A deterministic stand-in for a model's log-probabilities, one per whitespace word of the
    continuation: a word the context holds is likely (-1), any other unlikely (-3). So a response
    that repeats its instruction's words is easier given the instruction than alone."""
    seen = {_bare(w) for w in request.context.split()}
    words = request.continuation.split()[: request.max_tokens]
    return [-1.0 if _bare(w) in seen else -3.0 for w in words]


def _bare(word: str) -> str:
    return word.strip(".,;:!?'\"()[]").lower()


class ScriptedEngine:
    """Answers each request with `responder(request)`; records every request it saw. Scores
    continuations with `scorer(request)`.

    A string reply becomes a completion that finished normally; return a `Completion` to script a
    truncated reply (`finish_reason="length"`) or a failure (`"error"`).
    """

    def __init__(
        self,
        responder: Responder = _echo,
        model_name: str = "scripted",
        template: ChatTemplate | None = None,
        scorer: Scorer = word_logprobs,
    ) -> None:
        self.responder = responder
        self.scorer = scorer
        self.scored: list[list[ContinuationRequest]] = []
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

    def score_continuations(self, requests: Sequence[ContinuationRequest]) -> list[ContinuationScore]:
        """`scorer(request)` for each request (default: `word_logprobs`); records every batch it saw."""
        self.scored.append(list(requests))
        out = []
        for request in requests:
            result = self.scorer(request)
            if isinstance(result, list):
                result = ContinuationScore(logprobs=result, prompt_tokens=len(request.context.split()) + len(result))
            out.append(result)
        return out

    def close(self) -> None:
        pass
