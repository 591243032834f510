"""Preference pairs for DPO: several sampled responses per instruction, graded, best against worst.

For each source instruction the generator samples `samples` (K) responses, each with its own seed
(spread over the run's engine and any `response_engines`, in turn), has the judge (the run's
engine) grade every response `judge_samples` times on a 5-point rubric with structured output
(rationale first, then the score), averages the grades, and pairs the highest scoring response
(chosen) with the lowest (rejected); among equal scores the earlier response wins both ways, so
a run is deterministic. With `position_check` the pair is then shown to the judge side by side in
both orders (Zheng et al. 2023), and kept only if both orders prefer the chosen response.

Inputs: an engine (writer and judge), more writing engines if any, a `PreferencesConfig`, the
source's `Example`s. Outputs: `Record`s with `chosen`/`rejected`, both scores, rationales and
models (`output` is the chosen response, `messages` the prompt and the chosen answer) and
`Reject`s, never a silent drop: a response the engine failed or left empty, a grade that does not
parse (its raw reply in `raw`), an instruction with fewer than two graded responses, a tie, a
margin under `min_margin`, a side-by-side verdict that flips with the order, prefers the rejected
response or does not parse. Rejects of a pairing carry both responses and the judge's raw replies.
References: Yuan et al., "Self-Rewarding Language Models", 2024; Cui et al., "UltraFeedback", 2023;
Zheng et al., "Judging LLM-as-a-Judge with MT-Bench and Chatbot Arena", 2023.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synth.engines import ChatRequest, Completion, Engine
from synth.filters.judge import GRADE_SCHEMA, parse_grade
from synth.generators.provenance import Origin, request_seed
from synth.generators.sources import SourceError, load_instructions
from synth.prompts import TemplateSet, defuse, reply_object
from synth.schemas import Example, Message, Outcome, Record, Reject, Sampling, content_id
from synth.schemas.preferences import Preferences, PreferencesConfig

GENERATOR = "preferences"
RESPONSE = "preference_response"  # request tags (scripted engines route on them); also the templates' names
GRADE = "preference_grade"
COMPARE = "preference_compare"
TEMPLATES = TemplateSet((GRADE, COMPARE))

COMPARE_SCHEMA = {
    "type": "object",
    "properties": {
        "rationale": {"type": "string", "maxLength": 600},
        "better": {"type": "string", "enum": ["A", "B"]},
    },
    "required": ["rationale", "better"],
    "additionalProperties": False,
}
_BETTER_LINE = re.compile(r"^\W*better\W*([AB])\W*$", re.IGNORECASE | re.MULTILINE)

TIE = "tie"
FEW = "fewer than 2 graded responses"
UNPARSEABLE_GRADE = "unparseable grade"
FLIPS = "side-by-side verdict flips with the order"
PREFERS_REJECTED = "side-by-side prefers the rejected response"
UNPARSEABLE_VERDICT = "unparseable side-by-side verdict"


def parse_verdict(text: str) -> str | None:
    """ "A" or "B" from a side-by-side reply: JSON first, else a last "Better: A" line; None if neither."""
    if (data := reply_object(text)) is not None:
        better = data.get("better")
        return better.upper() if isinstance(better, str) and better.upper() in ("A", "B") else None
    matches = list(_BETTER_LINE.finditer(text))
    return matches[-1].group(1).upper() if matches else None


@dataclass
class Candidate:
    """One sampled response and, once graded, its mean score and the judge's replies."""

    index: int
    text: str
    model: str
    cut: bool = False
    score: float | None = None
    rationale: str = ""
    replies: list[str] = field(default_factory=list)


@dataclass
class PairResult(Outcome):
    """One chunk's records and rejects, with how many instructions it read and paired, and of the
    pairs shown side by side in both orders (`position_check`) how many got two verdicts and how
    many of those flipped with the order."""

    instructions: int = 0
    paired: int = 0
    position_checked: int = 0
    flipped: int = 0


class PreferencesGenerator:
    """Makes the preference pairs of one chunk of source instructions at a time."""

    def __init__(
        self,
        config: PreferencesConfig,
        engine: Engine,
        run_id: str = "",
        writers: Sequence[Engine] = (),
        parents: bool = False,
    ) -> None:
        """`engine` writes responses and judges; `writers` write responses too, in turn after it.
        `parents`: the source is a dataset of ours, so a pair's `parent_id` is its source record."""
        self.config = config
        self.engine = engine
        self.writers = [engine, *writers]
        self.parents = parents
        self.origin = Origin(GENERATOR, run_id, config.seed, engine.model_name)
        t = TEMPLATES.load(config.language)
        self.grade_template = t[GRADE]
        self.compare_template = t[COMPARE]

    def _seeded(self, base: Sampling, *where: object) -> Sampling:
        return base.model_copy(update={"seed": request_seed(self.config.seed, *where)})

    def _messages(self, item: Example) -> list[Message]:
        system = [Message(role="system", content=self.config.system_prompt)] if self.config.system_prompt else []
        return [*system, Message(role="user", content=item.prompt)]

    def run_chunk(self, batch: int, items: Sequence[Example]) -> PairResult:
        """Sample, grade and pair the responses of `items`: one engine call per writer for the
        responses, one for the grades, one for the side-by-side checks."""
        out = PairResult(instructions=len(items))
        candidates = self._respond(batch, items, out)
        self._grade(batch, items, candidates, out)
        pairs: list[tuple[Example, Candidate, Candidate]] = []
        for item, graded in zip(items, candidates, strict=True):
            ranked = [c for c in graded if c.score is not None]
            if len(ranked) < 2:
                out.rejects.append(self._pair_reject(batch, item, FEW, ranked, f"{len(ranked)} of {len(graded)}"))
                continue
            best = max(ranked, key=lambda c: c.score or 0.0)  # the first of equals, both ways
            worst = min(ranked, key=lambda c: c.score or 0.0)
            margin = (best.score or 0.0) - (worst.score or 0.0)
            if margin <= 0:
                out.rejects.append(self._pair_reject(batch, item, TIE, ranked, f"every response graded {best.score:g}"))
            elif margin < self.config.min_margin:
                reason = f"margin under {self.config.min_margin:g}"
                out.rejects.append(self._pair_reject(batch, item, reason, ranked, f"margin {margin:.2f}", best, worst))
            else:
                pairs.append((item, best, worst))
        if self.config.position_check:
            pairs = self._check_positions(batch, pairs, out)
        for item, best, worst in pairs:
            out.kept.append(self._record(batch, item, best, worst))
        out.paired = len(out.kept)
        return out

    def _respond(self, batch: int, items: Sequence[Example], out: PairResult) -> list[list[Candidate]]:
        """K responses per item; a failed or empty one is a reject and no candidate."""
        k, n = self.config.samples, len(self.writers)
        candidates: list[list[Candidate]] = [[] for _ in items]
        for w, writer in enumerate(self.writers):
            slots = [(i, j) for i in range(len(items)) for j in range(k) if j % n == w]
            if not slots:
                continue
            requests = [
                ChatRequest(
                    messages=self._messages(items[i]),
                    sampling=self._seeded(self.config.response_sampling, items[i].id, j, "response"),
                    tag=RESPONSE,
                )
                for i, j in slots
            ]
            for (i, j), reply in zip(slots, writer.chat(requests), strict=True):
                if reply.finish_reason == "error" or not reply.text.strip():
                    reason = "engine error" if reply.finish_reason == "error" else "empty response"
                    out.rejects.append(self._response_reject(batch, items[i], reason, reply, writer.model_name, j))
                else:
                    candidates[i].append(
                        Candidate(j, reply.text.strip(), writer.model_name, reply.finish_reason == "length")
                    )
        for row in candidates:
            row.sort(key=lambda c: c.index)
        return candidates

    def _grade(self, batch: int, items: Sequence[Example], candidates: list[list[Candidate]], out: PairResult) -> None:
        """Every candidate graded `judge_samples` times in one call; its score is the mean. A
        candidate with a grade that does not parse stays ungraded, and that reply is a reject."""
        slots = [(i, c, s) for i, row in enumerate(candidates) for c in row for s in range(self.config.judge_samples)]
        requests = [
            ChatRequest(
                messages=[Message(role="user", content=self._grade_prompt(items[i], c))],
                sampling=self._seeded(self.config.judge_sampling, items[i].id, c.index, "grade", s),
                json_schema=GRADE_SCHEMA,
                tag=GRADE,
            )
            for i, c, s in slots
        ]
        replies = self.engine.chat(requests) if requests else []
        grades: dict[int, list[tuple[tuple[int, str] | None, Completion]]] = {}
        for (_, c, _), reply in zip(slots, replies, strict=True):
            grades.setdefault(id(c), []).append(
                (None if reply.finish_reason == "error" else parse_grade(reply.text), reply)
            )
            c.replies.append(reply.text)
        for i, row in enumerate(candidates):
            for c in row:
                found = grades.get(id(c), [])
                failed = [reply for parsed, reply in found if parsed is None]
                if failed:
                    errors = all(r.finish_reason == "error" for r in failed)
                    reason = "engine error (grade)" if errors else UNPARSEABLE_GRADE
                    first = (
                        failed[0]
                        if len(failed) == 1
                        else Completion(
                            text=json.dumps([r.text for r in failed], ensure_ascii=False), error=failed[0].error
                        )
                    )
                    out.rejects.append(self._response_reject(batch, items[i], reason, first, c.model, c.index, c.text))
                    continue
                scores = [parsed[0] for parsed, _ in found if parsed is not None]
                c.score = sum(scores) / len(scores)
                c.rationale = next(parsed[1] for parsed, _ in found if parsed is not None)

    def _grade_prompt(self, item: Example, c: Candidate) -> str:
        return self.grade_template.render(instruction=defuse(item.prompt), response=defuse(c.text))

    def _check_positions(
        self, batch: int, pairs: list[tuple[Example, Candidate, Candidate]], out: PairResult
    ) -> list[tuple[Example, Candidate, Candidate]]:
        """Each pair judged side by side with the chosen response first, then second; kept only
        if both verdicts prefer it."""
        requests = []
        for item, best, worst in pairs:
            for order, (first, second) in enumerate(((best, worst), (worst, best))):
                prompt = self.compare_template.render(
                    instruction=defuse(item.prompt), first=defuse(first.text), second=defuse(second.text)
                )
                requests.append(
                    ChatRequest(
                        messages=[Message(role="user", content=prompt)],
                        sampling=self._seeded(self.config.compare_sampling, item.id, best.index, worst.index, order),
                        json_schema=COMPARE_SCHEMA,
                        tag=COMPARE,
                    )
                )
        replies = self.engine.chat(requests) if requests else []
        kept = []
        for n, (item, best, worst) in enumerate(pairs):
            ahead, behind = replies[2 * n], replies[2 * n + 1]
            verdicts = [None if r.finish_reason == "error" else parse_verdict(r.text) for r in (ahead, behind)]
            raw = json.dumps({"chosen first": ahead.text, "chosen second": behind.text}, ensure_ascii=False)
            out.position_checked += None not in verdicts
            if None in verdicts:
                reason = UNPARSEABLE_VERDICT
            elif (verdicts[0] == "A") != (verdicts[1] == "B"):
                out.flipped += 1
                reason = FLIPS
            elif verdicts[0] == "B":
                reason = PREFERS_REJECTED
            else:
                kept.append((item, best, worst))
                continue
            detail = f"chosen first: {verdicts[0]}, chosen second: {verdicts[1]}"
            out.rejects.append(self._pair_reject(batch, item, reason, [best, worst], detail, best, worst, raw=raw))
        return kept

    def _fields(self, batch: int, item: Example, **more: Any) -> dict[str, Any]:
        sampling = Sampling(**self.config.response_sampling.model_dump())
        lineage = {"source_id": item.id, "parent_id": item.id if self.parents else None}
        return self.origin.fields(batch, template=self.grade_template, sampling=sampling, **lineage) | more

    def _pair_fields(self, best: Candidate, worst: Candidate) -> dict[str, Any]:
        """The pair's block: each side's response, grade, rationale and model."""

        def side(name: str, c: Candidate) -> dict[str, Any]:
            return {name: c.text, f"{name}_score": c.score, f"{name}_rationale": c.rationale, f"{name}_model": c.model}

        return {Preferences.column: Preferences(**side("chosen", best), **side("rejected", worst))}

    def _record(self, batch: int, item: Example, best: Candidate, worst: Candidate) -> Record:
        messages = [*self._messages(item), Message(role="assistant", content=best.text)]
        tags = ["preference", *(["cut-off"] if best.cut else [])]
        return Record(
            instruction=item.instruction,
            input=item.input,
            output=best.text,
            messages=messages,
            tags=tags,
            **self._fields(batch, item, model=best.model),
            **self._pair_fields(best, worst),
        )

    def _pair_reject(
        self,
        batch: int,
        item: Example,
        reason: str,
        graded: list[Candidate],
        detail: str,
        best: Candidate | None = None,
        worst: Candidate | None = None,
        raw: str | None = None,
    ) -> Reject:
        """An instruction that gave no pair; the judge's replies for its graded responses in `raw`."""
        if raw is None:
            raw = json.dumps({f"response {c.index}": c.replies for c in graded}, ensure_ascii=False)
        pair = self._pair_fields(best, worst) if best is not None and worst is not None else {}
        return Reject(
            instruction=item.instruction,
            input=item.input,
            output=best.text if best is not None else "",
            stage="preference",
            reason=reason,
            detail=detail,
            raw=raw,
            **self._fields(batch, item),
            **pair,
        )

    def _response_reject(
        self, batch: int, item: Example, reason: str, reply: Completion, model: str, index: int, text: str = ""
    ) -> Reject:
        """One response that cannot take part: the engine failed or left it empty, or its grade does
        not parse (then `output` is the response and `raw` the judge's reply)."""
        stage = "engine" if reason.startswith("engine error") else "preference"
        where = f"{stage}\x1f{reason}\x1f{model}\x1f{index}"  # two failed responses of one instruction are two rejects
        return Reject(
            id=content_id(item.instruction, item.input, f"{text or reply.text}\x1f{where}"),
            instruction=item.instruction,
            input=item.input,
            output=text,
            stage=stage,
            reason=reason,
            detail=f"response {index}" + (f": {reply.error}" if reply.error else ""),
            raw=reply.text,
            **self._fields(batch, item, model=model),
        )


def check_inputs(config: PreferencesConfig, dataset: str | Path) -> None:
    """Read the source; the pairs go to another dataset than the one they are made from (a source
    that changes while it is read would change the run)."""
    TEMPLATES.load(config.language)  # the language has every prompt
    if Path(config.source).resolve() == Path(dataset).resolve():
        raise SourceError(f"{config.source}: write the preference pairs to another dataset than their source")
    load_instructions(config.source)
