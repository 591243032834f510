"""Evol-Instruct (Xu et al. 2023, WizardLM): rewrite instructions into harder or rarer ones, in rounds.

Each round, every instruction in the pool gets one operation, drawn with a seeded generator and
configurable weights: five in-depth rewrites (add a constraint, deepen, concretize, ask for
multi-step reasoning, complicate the input, for any instruction: one without an input gets one)
or an in-breadth mutation (a new, rarer instruction of the same domain). Every request carries
the config's system message, as the reference code's do. Failed evolutions are eliminated, each
as a reject with its reason, and the parent stays in the pool so the next round can try again.
The paper's rules:

1. the model judges the rewrite equal to its parent (no information gain); an unparseable verdict
   is a reject too, never a pass, and "not equal" never counts as "equal"; an empty or unchanged
   rewrite is the same failure, found without asking;
2. its response contains "sorry" and is shorter than 80 words;
3. its response is only punctuation and stop words;
4. the rewrite copies the rewriting prompt's words ("given prompt", "rewritten prompt",
   "created prompt", so "#Rewritten Prompt#" too).

Ours, beside them: a rewrite cut off at the token limit is eliminated; with `extra_eliminations`,
rule 2 also takes other refusal phrases ("I cannot", "as an AI"...) and rule 4 more leaked words
("new instruction", "#rewritten"...). A Markdown heading inside a rewrite is text like any other.

With `include_source` the source examples are written too, as round 0 (WizardLM trains on the
original data plus every evolved round): each keeps its source's id (so the lineage of its
evolutions, `root_id` and round 1's `parent_id`, names it) and its output; a source without an
output gets a response from the model, which faces rules 2 and 3.

A source instruction (with its input) longer than `MAX_INSTRUCTION_CHARS` characters is too
large to rewrite: it becomes a reject of round 1 with the reason, its source id as parent and root,
and only a snippet of its text; it is never placed into a prompt (nor written as round 0).
Instructions are untrusted text: wherever one (or an evolution of one) is placed into a prompt,
chat-control markers are defused; records keep the text as written.

Inputs: `Example`s, an engine, an `EvolInstructConfig`.
Outputs: one `Record` per surviving evolution (instruction, the model's response, lineage: root,
parent, operation, round), round 0's records, and `Reject`s with stage "evolution" and the reason.
Reference: Xu et al., "WizardLM: Empowering Large Language Models to Follow Complex Instructions", 2023.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from typing_extensions import TypedDict

from synth.engines import ChatRequest, Engine
from synth.filters.base import FilterChain
from synth.filters.novelty import snippet
from synth.generators.evol_eliminations import EQUALITY_SCHEMA, leak_reason, parse_equality, response_failure
from synth.generators.provenance import Origin, request_seed
from synth.generators.sources import load_instructions
from synth.prompts import Template, TemplateSet, defuse
from synth.schemas import EvolInstructConfig, Example, Message, Outcome, Record, Reject, content_id
from synth.schemas.config import EVOL_OPERATIONS as OPERATIONS

GENERATOR = "evol_instruct"
TEMPLATES = TemplateSet((*(f"evol_{op}" for op in OPERATIONS), "evol_equality", "evol_response"))
STAGE = "evolution"
SOURCE_OPERATION = "source"
# More than a small model's context holds (about 4 characters a token); generous on purpose.
MAX_INSTRUCTION_CHARS = 20_000
OVERSIZED = f"source instruction longer than {MAX_INSTRUCTION_CHARS} characters"

# The evolving prompts end with the label of the answer; `prefill_evolution` opens the reply with
# it and stops the reply at any label (a model that starts another section is done). A Markdown
# heading ("### Step 1") is none of these, so it stays in the rewrite.
ANSWER_LABEL = {False: "#Rewritten Prompt#:", True: "#Created Prompt#:"}
SECTION_LABELS = ["#Given Prompt#", "#Rewritten Prompt#", "#Created Prompt#"]


def _clean(text: str) -> str:
    return text.strip().strip('"').strip()


@dataclass
class PoolItem:
    """An instruction being evolved: the current text and where it came from."""

    id: str
    text: str
    root_id: str
    depth: int = 0


# One round's funnel as data: instructions in, evolved, eliminated by reason.
RoundCounts = TypedDict("RoundCounts", {"in": int, "evolved": int, "eliminated": dict[str, int]})


@dataclass
class RoundFunnel:
    entered: int = 0
    evolved: int = 0
    eliminated: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> RoundCounts:
        return {"in": self.entered, "evolved": self.evolved, "eliminated": dict(self.eliminated)}


@dataclass
class EvolResult(Outcome):
    rounds: dict[int, RoundFunnel] = field(default_factory=dict)


class EvolInstructGenerator:
    """Runs all rounds of Evol-Instruct on one chunk of source instructions at a time."""

    def __init__(self, config: EvolInstructConfig, engine: Engine, run_id: str = "") -> None:
        self.config = config
        self.engine = engine
        self.run_id = run_id
        self.origin = Origin(GENERATOR, run_id, config.seed, engine.model_name)
        t = TEMPLATES.load(config.language)
        self.templates = {op: t[f"evol_{op}"] for op in OPERATIONS}
        self.t_equal = t["evol_equality"]
        self.t_response = t["evol_response"]
        weights = config.operation_weights
        self.weights = [weights.get(op, 0.0) for op in OPERATIONS]
        self._extra = config.extra_eliminations
        self._screen: FilterChain | None = None

    def choose(self, rng: random.Random) -> str:
        """One operation, by weight; every operation applies to any instruction."""
        return rng.choices(OPERATIONS, weights=self.weights, k=1)[0]

    def _request(self, template: Template, sampling_name: str, where: tuple, **values: str) -> ChatRequest:
        base = getattr(self.config, sampling_name)
        system = [Message(role="system", content=self.config.system_prompt)] if self.config.system_prompt else []
        return ChatRequest(
            messages=[*system, Message(role="user", content=template.render(**values))],
            sampling=base.model_copy(update={"seed": request_seed(self.config.seed, *where)}),
            json_schema=EQUALITY_SCHEMA if template is self.t_equal else None,
            tag=template.name,
        )

    def evolve_request(self, op: str, text: str, where: tuple) -> ChatRequest:
        request = self._request(self.templates[op], "evolve_sampling", (*where, "evolve"), instruction=defuse(text))
        if self.config.prefill_evolution:
            # Small models otherwise talk about the task first, and go on to write another prompt.
            request.prefill = ANSWER_LABEL[op == "breadth"]
            request.stop = list(SECTION_LABELS)
        return request

    def run_chunk(self, chunk: int, items: Sequence[Example], screen: FilterChain | None = None) -> EvolResult:
        """Round 0 (with `include_source`), then all rounds for `items`; the pool starts as the items.

        `screen` (the curation chain's record rules) judges each round's records before the next
        round builds on them: a record it drops is a reject, and its parent stays in the pool, as
        for an eliminated evolution."""
        self._screen = screen
        out = EvolResult()
        pool, sources = [], []
        for i in items:
            text = i.prompt
            if len(text) > MAX_INSTRUCTION_CHARS:
                self._oversized(chunk, i.id, text, out)
            else:
                pool.append(PoolItem(i.id, text, root_id=i.id))
                sources.append(i)
        if self.config.include_source:
            self._round_zero(chunk, sources, out)
            # Round 1 evolves the round-0 records: they are the parents its records point to.
            written = {r.root_id: r.id for r in out.kept if r.round == 0}
            pool = [PoolItem(written.get(p.id, p.id), p.text, root_id=p.root_id) for p in pool]
        for rnd in range(1, self.config.rounds + 1):
            funnel = out.rounds.setdefault(rnd, RoundFunnel())
            funnel.entered += len(pool)
            rng = random.Random(f"{self.config.seed}:{chunk}:{rnd}")
            ops = [self.choose(rng) for _ in pool]
            pool = self._round(chunk, rnd, pool, ops, funnel, out)
        return out

    def _round_zero(self, chunk: int, sources: list[Example], out: EvolResult) -> None:
        """The source examples as round-0 records: their own output, or the model's response."""
        funnel = out.rounds.setdefault(0, RoundFunnel())
        funnel.entered += len(sources)
        unanswered = [k for k, s in enumerate(sources) if not s.output.strip()]
        requests = [
            self._request(
                self.t_response,
                "response_sampling",
                (chunk, 0, k, "response"),
                instruction=defuse(sources[k].prompt),
            )
            for k in unanswered
        ]
        replies = dict(zip(unanswered, self.engine.chat(requests) if requests else [], strict=True))
        written: list[Record] = []
        for k, source in enumerate(sources):
            reply = replies.get(k)
            fields = self._source_fields(chunk, source, generated=reply is not None)
            tags = ["evol-instruct", SOURCE_OPERATION]
            if reply is None:
                output = source.output
            else:
                output = reply.text.strip()
                reason = (
                    "engine error"
                    if reply.finish_reason == "error"
                    else response_failure(output, self._extra, self.config.language)
                )
                if reason:
                    funnel.eliminated[reason] += 1
                    out.rejects.append(
                        Reject(
                            stage=STAGE,
                            reason=reason,
                            instruction=source.instruction,
                            input=source.input,
                            output=output,
                            detail=reply.error or "",
                            **fields,
                        )
                    )
                    continue
                tags += ["cut-off"] if reply.finish_reason == "length" else []
            # A content id, like every record's: source ids need not be unique across sources.
            written.append(
                Record(instruction=source.instruction, input=source.input, output=output, tags=tags, **fields)
            )
        for record in self._screened(written, funnel, out):
            out.kept.append(record)
            funnel.evolved += 1

    def _screened(self, records: list[Record], funnel: RoundFunnel, out: EvolResult) -> list[Record]:
        """`records` that pass the screen; the others become its rejects, counted in the funnel."""
        if self._screen is None or not records:
            return records
        result = self._screen.apply(records)
        for reject in result.rejects:
            funnel.eliminated[f"{reject.stage}: {reject.reason}"] += 1
        out.rejects.extend(result.rejects)
        return result.kept

    def _source_fields(self, chunk: int, source: Example, generated: bool) -> dict:
        """Provenance of a round-0 example; model, sampling and template only where the model wrote the output."""
        lineage: dict[str, Any] = dict(root_id=source.id, operation=SOURCE_OPERATION, round=0)
        if not generated:
            return self.origin.fields(chunk, model="", **lineage)
        return self.origin.fields(chunk, template=self.t_response, sampling=self.config.response_sampling, **lineage)

    def _oversized(self, chunk: int, source_id: str, text: str, out: EvolResult) -> None:
        """A source instruction too large to rewrite: a reject of round 1 that names the source and
        keeps a snippet (the text stays in the source, not in the rejects)."""
        funnel = out.rounds.setdefault(1, RoundFunnel())
        funnel.entered += 1
        funnel.eliminated[OVERSIZED] += 1
        out.rejects.append(
            Reject(
                id=content_id(STAGE, OVERSIZED, source_id),
                **self.origin.fields(chunk, parent_id=source_id, root_id=source_id, round=1),
                stage=STAGE,
                reason=OVERSIZED,
                instruction=snippet(text, 200),
                detail=f"source {source_id!r}: {len(text)} characters",
            )
        )

    def _round(
        self, chunk: int, rnd: int, pool: list[PoolItem], ops: list[str], funnel: RoundFunnel, out: EvolResult
    ) -> list[PoolItem]:
        where = [(chunk, rnd, i) for i in range(len(pool))]
        requests = [self.evolve_request(op, p.text, w) for p, op, w in zip(pool, ops, where, strict=True)]
        replies = self.engine.chat(requests)
        next_pool = list(pool)  # a parent stays unless its evolution survives

        def eliminate(i: int, reason: str, evolved: str = "", **fields: object) -> None:
            funnel.eliminated[reason] += 1
            out.rejects.append(self._reject(chunk, rnd, pool[i], ops[i], reason, evolved, **fields))

        candidates: list[tuple[int, str]] = []
        for i, reply in enumerate(replies):
            if reply.finish_reason == "error":
                eliminate(i, "engine error", detail=reply.error or "")
                continue
            evolved = _clean(reply.text)
            if reply.finish_reason == "length":
                eliminate(i, "evolution cut off at the token limit", evolved, raw=reply.text)
            elif reason := leak_reason(pool[i].text, evolved, self._extra):
                eliminate(i, reason, evolved, raw=reply.text)
            else:
                candidates.append((i, evolved))

        judge = [
            self._request(
                self.t_equal, "judge_sampling", (*where[i], "equal"), first=defuse(pool[i].text), second=defuse(evolved)
            )
            for i, evolved in candidates
        ]
        gained: list[tuple[int, str]] = []
        for (i, evolved), reply in zip(candidates, self.engine.chat(judge), strict=True):
            verdict = None if reply.finish_reason == "error" else parse_equality(reply.text)
            if verdict is None:
                eliminate(i, "unparseable equality verdict", evolved, raw=reply.text, detail=reply.error or "")
            elif verdict:
                eliminate(i, "no information gain (judged equal to its parent)", evolved, raw=reply.text)
            else:
                gained.append((i, evolved))

        answer = [
            self._request(self.t_response, "response_sampling", (*where[i], "response"), instruction=defuse(evolved))
            for i, evolved in gained
        ]
        made: dict[int, int] = {}  # a record (the object's id: two may share content) -> its pool slot
        records: list[Record] = []
        for (i, evolved), reply in zip(gained, self.engine.chat(answer), strict=True):
            response = reply.text.strip()
            if reply.finish_reason == "error":
                eliminate(i, "engine error", evolved, detail=reply.error or "")
            elif reason := response_failure(response, self._extra, self.config.language):
                eliminate(i, reason, evolved, output=response)
            else:
                record = self._record(
                    chunk, rnd, pool[i], ops[i], evolved, response, cut=reply.finish_reason == "length"
                )
                made[id(record)] = i
                records.append(record)
        # Only a record the curation rules keep replaces its parent in the pool.
        for record in self._screened(records, funnel, out):
            i = made[id(record)]
            out.kept.append(record)
            funnel.evolved += 1
            next_pool[i] = PoolItem(record.id, record.instruction, root_id=pool[i].root_id, depth=pool[i].depth + 1)
        return next_pool

    def _common(self, chunk: int, rnd: int, parent: PoolItem, op: str) -> dict:
        return self.origin.fields(
            chunk,
            template=self.templates[op],
            sampling=self.config.response_sampling,
            parent_id=parent.id,
            root_id=parent.root_id,
            operation=op,
            round=rnd,
        )

    def _record(
        self, chunk: int, rnd: int, parent: PoolItem, op: str, evolved: str, response: str, cut: bool
    ) -> Record:
        # A response cut at the token limit is kept by the generator and tagged; the curation
        # chain's heuristics drop it (or keep it, if configured so).
        tags = ["evol-instruct", "in-breadth" if op == "breadth" else "in-depth", *(["cut-off"] if cut else [])]
        return Record(instruction=evolved, output=response, tags=tags, **self._common(chunk, rnd, parent, op))

    def _reject(
        self, chunk: int, rnd: int, parent: PoolItem, op: str, reason: str, evolved: str, **fields: object
    ) -> Reject:
        return Reject(stage=STAGE, reason=reason, instruction=evolved, **self._common(chunk, rnd, parent, op), **fields)  # type: ignore[arg-type]


def check_inputs(config: EvolInstructConfig, dataset: str | Path) -> None:
    """Read the source (a source that is the dataset itself and does not exist yet is left to an
    earlier step of a recipe)."""
    TEMPLATES.load(config.language)  # the language has every prompt
    source = Path(config.source)
    if source.exists() or source.resolve() != Path(dataset).resolve():
        load_instructions(config.source)
