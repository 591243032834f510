"""A scripted engine: replies come from a function of the request, for tests and dry runs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

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


@dataclass(eq=False)
class ScriptedEngine:
    """Answers each request with `responder(request)`; records every request it saw (`calls`, one
    list per batch). Scores continuations with `scorer(request)` (batches seen: `scored`).

    A string reply becomes a completion that finished normally; return a `Completion` to script a
    truncated reply (`finish_reason="length"`) or a failure (`"error"`). A list of log-probabilities
    becomes a score whose prompt is the context's words and the scored ones.
    """

    responder: Responder = _echo
    model_name: str = "scripted"
    template: ChatTemplate | None = None
    scorer: Scorer = word_logprobs
    max_model_len: int | None = None  # a context length to report (Magpie tests script one)
    # Tests read back every request; a dry run built from a config (`get_engine`) keeps none: at
    # Self-Instruct's reply lengths the requests held 5.6 KB per kept record (measured), 5 GiB in a
    # million-record run.
    keep_calls: bool = True
    calls: list[list[ChatRequest]] = field(default_factory=list, init=False, repr=False)
    scored: list[list[ContinuationRequest]] = field(default_factory=list, init=False, repr=False)

    def context_length(self) -> int | None:
        """The context length given to it, if any."""
        return self.max_model_len

    def chat_template(self) -> ChatTemplate | None:
        """The chat template given to it, if any (Magpie tests script one)."""
        return self.template

    def chat(self, requests: Sequence[ChatRequest]) -> list[Completion]:
        if self.keep_calls:
            self.calls.append(list(requests))
        return [_completion(self.responder(request)) for request in requests]

    def score_continuations(self, requests: Sequence[ContinuationRequest]) -> list[ContinuationScore]:
        """`scorer(request)` for each request (default: `word_logprobs`); records every batch it saw."""
        if self.keep_calls:
            self.scored.append(list(requests))
        return [_score(request, self.scorer(request)) for request in requests]

    def close(self) -> None:
        pass


def _completion(reply: str | Completion) -> Completion:
    return Completion(text=reply, completion_tokens=len(reply.split())) if isinstance(reply, str) else reply


def _score(request: ContinuationRequest, result: list[float] | ContinuationScore) -> ContinuationScore:
    if isinstance(result, list):
        return ContinuationScore(logprobs=result, prompt_tokens=len(request.context.split()) + len(result))
    return result
