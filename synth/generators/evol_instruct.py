"""Evol-Instruct (Xu et al. 2023, WizardLM): rewrite instructions into harder or rarer ones, in rounds.

Each round, every instruction in the pool gets one operation, drawn with a seeded generator and
configurable weights: five in-depth rewrites (add a constraint, deepen, concretize, ask for
multi-step reasoning, complicate the input: the last only for instructions that carry code, a
table or data) or an in-breadth mutation (a new, rarer instruction of the same domain). Failed
evolutions are eliminated, each as a reject with its reason, and the parent stays in the pool so
the next round can try again:

1. the rewrite is empty, unchanged, or leaks the rewriting prompt's words;
2. the model judges it equal to its parent (no information gain); an unparseable verdict is a
   reject too, never a pass, and "not equal" never counts as "equal";
3. its response is a short refusal ("sorry" and the like, under 80 words);
4. its response is only punctuation and stop words.

A source instruction (with its input) longer than `MAX_INSTRUCTION_CHARS` characters is too
large to rewrite: it becomes a reject of round 1 with the reason, its source id as parent and root,
and only a snippet of its text; it is never placed into a prompt. Instructions are untrusted
text: wherever one (or an evolution of one) is placed into a prompt, chat-control markers are
defused; records keep the text as written.

Inputs: `SourceItem`s, an engine, an `EvolInstructConfig`.
Outputs: one `Record` per surviving evolution (instruction, the model's response, lineage: root,
parent, operation, round) and `Reject`s with stage "evolution" and the reason.
Reference: Xu et al., "WizardLM: Empowering Large Language Models to Follow Complex Instructions", 2023.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from synth.engines import ChatRequest, Engine
from synth.filters.heuristics import is_short_refusal, only_punctuation_and_stop_words
from synth.filters.judge import defuse
from synth.filters.novelty import snippet
from synth.generators.self_instruct import request_seed
from synth.generators.sources import SourceItem
from synth.generators.templates import Template, load_template
from synth.schemas import EvolInstructConfig, Message, Record, Reject, content_id
from synth.schemas.config import EVOL_OPERATIONS as OPERATIONS

GENERATOR = "evol_instruct"
STAGE = "evolution"
# More than a small model's context holds (about 4 characters a token); generous on purpose.
MAX_INSTRUCTION_CHARS = 20_000
OVERSIZED = f"source instruction longer than {MAX_INSTRUCTION_CHARS} characters"

# Words of the rewriting prompts that must not appear in an evolved instruction.
LEAK_MARKERS = (
    "###",
    "original instruction",
    "rewritten instruction",
    "new instruction",
    "given prompt",
    "rewritten prompt",
    "created prompt",
    "new prompt",
    "#given",
    "#rewritten",
    "#created",
)
_STRUCTURED = re.compile(
    r"```|\|.*\||^\s*[\[{]|\bdef |\bclass |\bselect\b.*\bfrom\b|;\s*$|\d+[,;]\s*\d+", re.IGNORECASE | re.MULTILINE
)
_EVOLVE_PREFILL = {False: "Rewritten instruction:", True: "New instruction:"}
# Measured on the embedded 135M model: its verdict follows whichever option is listed first, so it
# cannot judge equality; the order here is arbitrary and a capable model is indifferent to it.
EQUALITY_SCHEMA = {
    "type": "object",
    "properties": {"verdict": {"type": "string", "enum": ["not equal", "equal"]}},
    "required": ["verdict"],
    "additionalProperties": False,
}


def carries_structured_input(text: str) -> bool:
    """Whether an instruction works on code, a table or data (so "complicate the input" applies)."""
    return _STRUCTURED.search(text) is not None


def parse_equality(text: str) -> bool | None:
    """True for "equal", False for "not equal", None for anything else.

    Accepted: the JSON `{"verdict": ...}` or the bare verdict words. A reply that merely contains
    "equal" (such as "not equal", "unequal" or "they are equal-ish") is never read as equal.
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None
    verdict = data.get("verdict") if isinstance(data, dict) else text
    if not isinstance(verdict, str):
        return None
    words = re.sub(r"[^a-z ]+", " ", verdict.lower()).split()
    if words == ["equal"]:
        return True
    if words in (["not", "equal"], ["not", "equal", "to", "each", "other"]):
        return False
    return None


def leak_reason(parent: str, evolved: str) -> str | None:
    """Why an evolved instruction is unusable before asking the model anything, or None."""
    if not evolved.strip():
        return "empty evolution"
    if " ".join(evolved.lower().split()) == " ".join(parent.lower().split()):
        return "unchanged instruction"
    lowered = evolved.lower()
    for marker in LEAK_MARKERS:
        if marker in lowered:
            return f"leaked rewriting prompt ({marker})"
    return None


def _clean(text: str) -> str:
    return text.strip().strip('"').strip()


@dataclass
class PoolItem:
    """An instruction being evolved: the current text and where it came from."""

    id: str
    text: str
    root_id: str
    depth: int = 0


@dataclass
class RoundFunnel:
    entered: int = 0
    evolved: int = 0
    eliminated: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict:
        return {"in": self.entered, "evolved": self.evolved, "eliminated": dict(self.eliminated)}


@dataclass
class EvolResult:
    kept: list[Record] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    rounds: dict[int, RoundFunnel] = field(default_factory=dict)


class EvolInstructGenerator:
    """Runs all rounds of Evol-Instruct on one chunk of source instructions at a time."""

    def __init__(self, config: EvolInstructConfig, engine: Engine, run_id: str = "") -> None:
        self.config = config
        self.engine = engine
        self.run_id = run_id
        self.templates = {op: load_template(f"evol_{op}") for op in OPERATIONS}
        self.t_equal = load_template("evol_equality")
        self.t_response = load_template("evol_response")
        weights = config.operation_weights
        self.weights = [weights.get(op, 0.0) for op in OPERATIONS]

    def choose(self, rng: random.Random, text: str) -> str:
        """One operation, by weight; "complicate the input" only where there is an input to complicate."""
        weights = list(self.weights)
        if not carries_structured_input(text):
            weights[OPERATIONS.index("complicate_input")] = 0.0
        return rng.choices(OPERATIONS, weights=weights, k=1)[0]

    def _request(self, template: Template, sampling_name: str, where: tuple, **values: str) -> ChatRequest:
        base = getattr(self.config, sampling_name)
        return ChatRequest(
            messages=[Message(role="user", content=template.render(**values))],
            sampling=base.model_copy(update={"seed": request_seed(self.config.seed, *where)}),
            json_schema=EQUALITY_SCHEMA if template is self.t_equal else None,
            tag=template.name,
        )

    def evolve_request(self, op: str, text: str, where: tuple) -> ChatRequest:
        request = self._request(self.templates[op], "evolve_sampling", (*where, "evolve"), instruction=defuse(text))
        # The reply opens as the rewrite itself (small models otherwise talk about the task first),
        # and the prompt's sections are headed "###": a model that starts another section is done.
        request.prefill = _EVOLVE_PREFILL[op == "breadth"]
        request.stop = ["###"]
        return request

    def run_chunk(self, chunk: int, items: Sequence[SourceItem]) -> EvolResult:
        """All rounds for `items`; the pool starts as the items themselves."""
        out = EvolResult()
        pool = []
        for i in items:
            text = f"{i.instruction}\n\n{i.input}" if i.input else i.instruction
            if len(text) > MAX_INSTRUCTION_CHARS:
                self._oversized(chunk, i.id, text, out)
            else:
                pool.append(PoolItem(i.id, text, root_id=i.id))
        for rnd in range(1, self.config.rounds + 1):
            funnel = out.rounds.setdefault(rnd, RoundFunnel())
            funnel.entered += len(pool)
            rng = random.Random(f"{self.config.seed}:{chunk}:{rnd}")
            ops = [self.choose(rng, p.text) for p in pool]
            pool = self._round(chunk, rnd, pool, ops, funnel, out)
        return out

    def _oversized(self, chunk: int, source_id: str, text: str, out: EvolResult) -> None:
        """A source instruction too large to rewrite: a reject of round 1 that names the source and
        keeps a snippet (the text stays in the source, not in the rejects)."""
        funnel = out.rounds.setdefault(1, RoundFunnel())
        funnel.entered += 1
        funnel.eliminated[OVERSIZED] += 1
        out.rejects.append(
            Reject(
                id=content_id(STAGE, OVERSIZED, source_id),
                generator=GENERATOR,
                model=self.engine.model_name,
                seed=self.config.seed,
                run_id=self.run_id,
                batch=chunk,
                parent_id=source_id,
                root_id=source_id,
                round=1,
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
            elif reason := leak_reason(pool[i].text, evolved):
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
        for (i, evolved), reply in zip(gained, self.engine.chat(answer), strict=True):
            response = reply.text.strip()
            if reply.finish_reason == "error":
                eliminate(i, "engine error", evolved, detail=reply.error or "")
            elif is_short_refusal(response):
                eliminate(i, "response is a short refusal", evolved, output=response)
            elif only_punctuation_and_stop_words(response):
                eliminate(i, "response is only punctuation and stop words", evolved, output=response)
            else:
                record = self._record(
                    chunk, rnd, pool[i], ops[i], evolved, response, cut=reply.finish_reason == "length"
                )
                out.kept.append(record)
                funnel.evolved += 1
                next_pool[i] = PoolItem(record.id, evolved, root_id=pool[i].root_id, depth=pool[i].depth + 1)
        return next_pool

    def _common(self, chunk: int, rnd: int, parent: PoolItem, op: str) -> dict:
        template = self.templates[op]
        return dict(
            generator=GENERATOR,
            model=self.engine.model_name,
            sampling=self.config.response_sampling,
            template=template.name,
            template_hash=template.hash,
            seed=self.config.seed,
            run_id=self.run_id,
            batch=chunk,
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
