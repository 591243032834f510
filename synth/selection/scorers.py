"""Scorers that add a column to each record for selection: the model's complexity and quality
ratings (Deita), instruction-following difficulty (IFD), and the response's length in tokens.

Each scorer takes a batch of items and makes one batched engine call (or one tokenizer call). An
item it cannot score is a failure with its reason and the raw reply, never a silent gap. `key`
hashes everything its values depend on (model, prompt template, parameters), so stored scores are
reused only by the same scorer.

References: Liu et al. 2024, "What Makes Good Data for Alignment?" (Deita: complexity x quality);
Li et al. 2024, "From Quantity to Quality" (IFD) and "Superfiltering" (IFD from a small model);
Zhao et al. 2024, "Long Is More for Alignment" (response length).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import polars as pl

from synth.engines.base import ChatRequest, ContinuationRequest, Engine, EngineError
from synth.prompts import defuse, load_template, reply_object
from synth.schemas import Message
from synth.schemas.config import SamplingConfig

RATING_MAX = 6  # Deita's scorers rate on 1-6
RATING_SCHEMA = {
    "type": "object",
    "properties": {"score": {"type": "integer", "enum": list(range(1, RATING_MAX + 1))}},
    "required": ["score"],
    "additionalProperties": False,
}


@dataclass(frozen=True)
class Item:
    """What a scorer reads of a record."""

    id: str
    instruction: str
    input: str
    output: str

    @property
    def prompt(self) -> str:
        """The user's turn: the instruction, and its input below it when there is one."""
        return f"{self.instruction}\n\n{self.input}" if self.input else self.instruction


@dataclass(frozen=True)
class Failure:
    """Why an item has no score. `final` failures (an unparseable reply) are stored and not tried
    again; an engine error is not final: the next run asks again."""

    reason: str
    detail: str = ""
    raw: str = ""
    final: bool = True


@dataclass
class ScoreBatch:
    """A batch's scores: values by item id ({column: value}) and failures by item id."""

    values: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: dict[str, Failure] = field(default_factory=dict)


class Scorer(Protocol):
    """Adds `columns` to items; `key` identifies what its values depend on."""

    name: str
    columns: dict[str, pl.DataType]

    def describe(self) -> dict[str, Any]: ...

    def score(self, items: Sequence[Item]) -> ScoreBatch: ...


def scorer_key(scorer: Scorer) -> str:
    """A short hash of the scorer's description: equal keys give equal values."""
    blob = json.dumps({"name": scorer.name, **scorer.describe()}, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


class RatingScorer:
    """Deita's complexity or quality rating by a model: one prompt per record (the instruction for
    complexity; instruction and answer for quality), structured output `{"score": N}` on 1-6.

    Deita trains its own scorers and reads the expected score from the score tokens'
    probabilities; here the configured model rates with our prompts and the integer it writes is
    the score."""

    def __init__(self, aspect: str, engine: Engine, sampling: SamplingConfig, language: str = "en") -> None:
        if aspect not in ("complexity", "quality"):
            raise ValueError(f"unknown rating {aspect!r}: complexity or quality")
        self.aspect = aspect
        self.name = aspect
        self.engine = engine
        self.sampling = sampling
        self.template = load_template(f"select_{aspect}", language)
        self.columns: dict[str, pl.DataType] = {f"{aspect}_score": pl.Float64()}

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.engine.model_name,
            "template": self.template.name,
            "template_hash": self.template.hash,
            "sampling": self.sampling.model_dump(),
        }

    def request(self, item: Item) -> ChatRequest:
        fields = {"instruction": defuse(item.prompt)}
        if "output" in self.template.fields:
            fields["output"] = defuse(item.output)
        return ChatRequest(
            messages=[Message(role="user", content=self.template.render(**fields))],
            sampling=self.sampling,
            json_schema=RATING_SCHEMA,
            tag=f"select_{self.aspect}",
        )

    def score(self, items: Sequence[Item]) -> ScoreBatch:
        result = ScoreBatch()
        replies = self.engine.chat([self.request(i) for i in items])
        column = f"{self.aspect}_score"
        for item, reply in zip(items, replies, strict=True):
            if reply.finish_reason == "error":
                result.failures[item.id] = Failure("engine error", reply.error or "", reply.text, final=False)
                continue
            value = parse_rating(reply.text)
            if value is None:
                result.failures[item.id] = Failure(f"unparseable {self.aspect} rating", raw=reply.text)
            else:
                result.values[item.id] = {column: float(value)}
        return result


def parse_rating(text: str) -> int | None:
    """The 1-6 score of a rating reply (a JSON object with `score`), or None."""
    data = reply_object(text)
    score = None if data is None else data.get("score")
    if isinstance(score, int) and not isinstance(score, bool) and 1 <= score <= RATING_MAX:
        return score
    return None


# Used where the engine has no chat template of its own to render the user's turn (the Alpaca-style
# prompt of the IFD paper's code).
_PLAIN_PROMPT = "### Instruction:\n{prompt}\n\n### Response:\n"
_PLAIN_HEADER = "### Response:\n"


def user_turn(tokenizer: Any | None, prompt: str) -> str:
    """`prompt` as the user's turn and the opening of the assistant's, in the chat template of
    `tokenizer` (a Hugging Face tokenizer's), or in the Alpaca-style prompt without one: the context
    a scored response follows."""
    if tokenizer is None:
        return _PLAIN_PROMPT.format(prompt=prompt)
    turns = [{"role": "user", "content": prompt}]
    return str(tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True))


def assistant_header(tokenizer: Any | None) -> str:
    """What the chat template adds to open the assistant's turn (the generation prompt): the
    context a response is scored after on its own."""
    if tokenizer is None:
        return _PLAIN_HEADER
    closed = str(tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False))
    opened = user_turn(tokenizer, "x")
    return opened[len(closed) :] if opened.startswith(closed) and len(opened) > len(closed) else _PLAIN_HEADER


class IFDScorer:
    """Instruction-following difficulty: the response's mean per-token loss given the instruction,
    divided by its loss alone, from the engine's prompt log-probabilities (nothing is generated).

    The conditioned context is the chat template's user turn and the opening of the assistant's;
    the unconditioned one is the assistant's opening alone (the paper's code puts the answer after
    its "### Response:" header). IFD >= 1 means the instruction does not make the response easier:
    the paper drops such records, and so does the `ifd` selector."""

    name = "ifd"

    def __init__(self, engine: Engine, max_tokens: int = 1024) -> None:
        if not callable(getattr(engine, "score_continuations", None)):
            raise EngineError(
                f"the engine {engine.model_name} cannot score continuations (IFD needs log-probabilities)"
            )
        self.engine = engine
        self.max_tokens = max_tokens
        self.columns: dict[str, pl.DataType] = {"ifd": pl.Float64()}
        get = getattr(engine, "chat_template", None)
        template = get() if callable(get) else None
        self.tokenizer = getattr(template, "tokenizer", None)
        self.header = assistant_header(self.tokenizer)

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.engine.model_name,
            "max_tokens": self.max_tokens,
            "header": self.header,
            "template": "chat" if self.tokenizer is not None else _PLAIN_PROMPT,
        }

    def context(self, item: Item) -> str:
        return user_turn(self.tokenizer, item.prompt)

    def score(self, items: Sequence[Item]) -> ScoreBatch:
        result = ScoreBatch()
        todo = [i for i in items if i.output.strip()]
        for item in items:
            if not item.output.strip():
                result.failures[item.id] = Failure("no response to score")
        requests: list[ContinuationRequest] = []
        for item in todo:
            requests.append(
                ContinuationRequest(
                    context=self.context(item), continuation=item.output, max_tokens=self.max_tokens, tag="select_ifd"
                )
            )
            requests.append(
                ContinuationRequest(
                    context=self.header, continuation=item.output, max_tokens=self.max_tokens, tag="select_ifd"
                )
            )
        scores = self.engine.score_continuations(requests) if requests else []  # type: ignore[attr-defined]
        for n, item in enumerate(todo):
            given, alone = scores[2 * n], scores[2 * n + 1]
            if given.error or alone.error or not given.logprobs or not alone.logprobs:
                detail = given.error or alone.error or "no log-probabilities"
                result.failures[item.id] = Failure("engine error", detail, final=False)
                continue
            # The same tokens in both: a context near the length limit can cut the conditioned one shorter.
            n_tokens = min(len(given.logprobs), len(alone.logprobs))
            loss_given = -sum(given.logprobs[:n_tokens]) / n_tokens
            loss_alone = -sum(alone.logprobs[:n_tokens]) / n_tokens
            if loss_alone <= 0 or not math.isfinite(loss_given) or not math.isfinite(loss_alone):
                result.failures[item.id] = Failure("ifd undefined", f"loss alone {loss_alone}, given {loss_given}")
                continue
            result.values[item.id] = {"ifd": loss_given / loss_alone}
        return result


class ResponseTokens:
    """The response's length in the scoring model's tokens (one tokenizer call per batch), or in
    whitespace words where no tokenizer is given ("Long is more": the longest responses)."""

    name = "tokens"

    def __init__(self, tokenizer: Any | None, tokenizer_name: str = "words") -> None:
        self.tokenizer = tokenizer
        self.tokenizer_name = tokenizer_name if tokenizer is not None else "words"
        self.columns: dict[str, pl.DataType] = {"response_tokens": pl.Int64()}

    def describe(self) -> dict[str, Any]:
        return {"tokenizer": self.tokenizer_name}

    def score(self, items: Sequence[Item]) -> ScoreBatch:
        outputs = [i.output for i in items]
        if self.tokenizer is None:
            lengths = [len(o.split()) for o in outputs]
        else:
            lengths = [len(ids) for ids in self.tokenizer(outputs, add_special_tokens=False)["input_ids"]]
        return ScoreBatch(values={i.id: {"response_tokens": n} for i, n in zip(items, lengths, strict=True)})
