"""Magpie (Xu et al. 2024): instruction data from an aligned model with no seed and no prompt.

An aligned chat model, given only the opening of a user turn of its own chat template (the
"pre-query" text, e.g. `<|im_start|>user\n`), goes on to write a plausible user message. Magpie
samples such messages, then has the same model answer each one as a normal chat turn; with
`turns > 1` the conversation continues: the template is rendered up to the next user turn's
opening and the model writes the user's follow-up.

The raw pre-query prompt is sent without a chat template (vLLM's `generate`, or a server's
`/v1/completions`), which is what lets this run where a chat-only endpoint cannot. The template
comes from the model's tokenizer (in-process vLLM; or the engine config's `tokenizer` folder for a
server), or from `template` (single-turn).

Inputs: an engine, a `MagpieConfig`. Outputs: `Record`s (instruction and output of the first turn,
`messages` with every turn) and `Reject`s: a user message that is empty, too short, or cut off at
the token limit; an engine error; nothing is dropped silently.
Reference: Xu et al., "Magpie: Alignment Data Synthesis from Scratch by Prompting Aligned LLMs with
Nothing", 2024.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from synth.engines import ChatRequest, Engine
from synth.engines.base import ChatTemplate, Completion, context_length
from synth.filters.tokens import words
from synth.generators.provenance import Origin, request_seed
from synth.schemas import Message, Outcome, Record, Reject, Sampling
from synth.schemas.magpie import MagpieConfig

GENERATOR = "magpie"
QUERY = "magpie_query"  # request tags (scripted engines route on them)
RESPONSE = "magpie_response"


class MagpieError(ValueError):
    """Magpie cannot run as configured (no chat template to open a user turn with)."""


def template_of(engine: Engine, config: MagpieConfig) -> ChatTemplate | None:
    """The chat template Magpie renders turns with: the engine's model's, if it has one."""
    get = getattr(engine, "chat_template", None)
    template = get() if callable(get) else None
    if template is None and config.template is None:
        raise MagpieError(
            "Magpie needs the model's chat template to open a user turn: use the in-process vLLM engine, give "
            "the server engine a local `tokenizer` folder, or set `template` (the text that opens a user turn)"
        )
    if template is None and config.turns > 1:
        raise MagpieError("several turns need the model's chat template (a `template` string opens only the first)")
    return template


# Room for a chat template's own tokens around each message (role markers, turn ends); SmolLM2's
# and Llama 3's take under ten tokens a message.
TEMPLATE_TOKENS_PER_MESSAGE = 16


@dataclass(frozen=True)
class TurnBudget:
    """The token limits of each turn's user message and response, and whether they were scaled down
    from the configured ones to fit a conversation of `turns` turns into the model's context."""

    query_tokens: int
    response_tokens: int
    scaled: bool = False
    context: int | None = None

    def describe(self) -> str:
        if not self.scaled:
            return ""
        return (
            f"per-turn token limits scaled to fit the model's context of {self.context} tokens: "
            f"user messages up to {self.query_tokens}, responses up to {self.response_tokens}"
        )


def turn_budget(config: MagpieConfig, context: int | None) -> TurnBudget:
    """The configured per-turn limits (the paper's), or, for a multi-turn conversation that would
    not fit `context` tokens at those limits, the same limits scaled down in proportion so that its
    last response still fits (the system prompt counted at about three characters a token)."""
    q, r = config.query_sampling.max_tokens, config.response_sampling.max_tokens
    if context is None or config.turns == 1:
        return TurnBudget(q, r)
    fixed = len(config.system_prompt) // 3 + TEMPLATE_TOKENS_PER_MESSAGE * (2 * config.turns + 1)
    room = context - fixed
    if config.turns * (q + r) <= room:
        return TurnBudget(q, r, context=context)
    if room < 2 * config.turns * 8:
        raise MagpieError(f"{config.turns} turns cannot fit the model's context of {context} tokens; use fewer turns")
    share = room / (config.turns * (q + r))
    return TurnBudget(max(8, int(q * share)), max(8, int(r * share)), scaled=True, context=context)


class MagpieGenerator:
    """Makes one batch of Magpie conversations at a time."""

    def __init__(self, config: MagpieConfig, engine: Engine, run_id: str = "") -> None:
        self.config = config
        self.engine = engine
        self.budget = turn_budget(config, context_length(engine))
        self.template = template_of(engine, config)
        self.origin = Origin(GENERATOR, run_id, config.seed, engine.model_name)
        stops = ["\n"] if config.stop_at_newline else []
        if self.template is not None and (end := self.template.end_of_turn()):
            stops.append(end)
        self.stops = stops

    def _opening(self, conversation: Sequence[Message]) -> str:
        if self.template is None:
            assert self.config.template is not None
            return self.config.template
        return self.template.pre_query(conversation)

    def _sampling(self, base: Sampling, *where: object) -> Sampling:
        cap = self.budget.query_tokens if where[-1] == "query" else self.budget.response_tokens
        return base.model_copy(update={"seed": request_seed(self.config.seed, *where), "max_tokens": cap})

    def run_batch(self, batch: int, size: int) -> Outcome:
        """`size` conversations of `turns` turns each; a conversation that fails at any turn is a
        reject with what it had so far."""
        c = self.config
        system = [Message(role="system", content=c.system_prompt)] if c.system_prompt else []
        live: dict[int, list[Message]] = {i: list(system) for i in range(size)}
        cut: set[int] = set()  # conversations whose last response hit the token limit
        out = Outcome()
        done: dict[int, str] = {}  # conversations ended early with completed turns: why
        for turn in range(c.turns):
            order = [i for i in live if i not in done]
            if not order:
                break
            queries = self.engine.chat(
                [
                    ChatRequest(
                        raw=self._opening(live[i]),
                        sampling=self._sampling(c.query_sampling, batch, i, turn, "query"),
                        stop=self.stops,
                        tag=QUERY,
                    )
                    for i in order
                ]
            )
            for i, reply in zip(order, queries, strict=True):
                if (reason := self._query_problem(reply)) is not None:
                    if turn > 0:  # the turns completed so far make a conversation of their own
                        done[i] = reason
                        continue
                    out.rejects.append(self._reject(batch, live.pop(i), "query", reason, reply))
                else:
                    live[i].append(Message(role="user", content=reply.text.strip()))
            order = [i for i in live if i not in done]
            answers = self.engine.chat(
                [
                    ChatRequest(
                        messages=live[i],
                        sampling=self._sampling(c.response_sampling, batch, i, turn, "response"),
                        tag=RESPONSE,
                    )
                    for i in order
                ]
            )
            for i, reply in zip(order, answers, strict=True):
                if turn > 0 and (reply.finish_reason == "error" or not reply.text.strip()):
                    live[i].pop()  # the unanswered user message
                    done[i] = "engine error" if reply.finish_reason == "error" else "empty response"
                elif reply.finish_reason == "error":
                    out.rejects.append(self._reject(batch, live.pop(i), "response", "engine error", reply))
                elif not reply.text.strip():
                    out.rejects.append(self._reject(batch, live.pop(i), "response", "empty response", reply))
                else:
                    live[i].append(Message(role="assistant", content=reply.text.strip()))
                    if reply.finish_reason == "length":
                        cut.add(i)  # kept and tagged; the curation chain's heuristics decide
        for i, conversation in live.items():
            out.kept.append(self._record(batch, conversation, cut=i in cut, short=i in done))
        return out

    def _query_problem(self, reply: Completion) -> str | None:
        if reply.finish_reason == "error":
            return "engine error"
        if reply.finish_reason == "length":
            return "user message cut off at the token limit"
        text = reply.text.strip()
        if not text:
            return "empty user message"
        if len(words(text)) < self.config.min_query_words:
            return f"user message under {self.config.min_query_words} words"
        return None

    def _fields(self, batch: int) -> dict:
        sampling = self.config.response_sampling
        return self.origin.fields(batch, sampling=Sampling(**sampling.model_dump()))

    def _record(self, batch: int, conversation: list[Message], cut: bool, short: bool = False) -> Record:
        turns = [m for m in conversation if m.role != "system"]
        tags = ["magpie", *(["multi-turn"] if len(turns) > 2 else []), *(["cut-off"] if cut else [])]
        # A conversation that could not go on (a later user message or response failed, or no
        # longer fit the context) keeps the turns it completed, tagged so they can be told apart.
        tags += ["fewer-turns"] if short else []
        return Record(
            instruction=turns[0].content,
            output=turns[1].content,
            messages=conversation,
            tags=tags,
            **self._fields(batch),
        )

    def _reject(self, batch: int, conversation: list[Message], where: str, reason: str, reply: Completion) -> Reject:
        """A conversation that failed at `where` (the user message or the response) of its current
        turn, with what it had so far and the raw reply."""
        turns = [m for m in conversation if m.role != "system"]
        return Reject(
            instruction=turns[0].content if turns else reply.text.strip(),
            output=turns[1].content if len(turns) > 1 else "",
            messages=conversation,
            stage="engine" if reason == "engine error" else "parse",
            reason=f"{reason} ({where}, turn {len(turns) // 2 + 1})" if self.config.turns > 1 else reason,
            detail=reply.error or "",
            raw=reply.text,
            **self._fields(batch),
        )


def check_inputs(config: MagpieConfig, dataset: str | Path) -> None:
    """Magpie reads no seed or source file: nothing to check."""
