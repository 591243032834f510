"""Instruction backtranslation (Li et al. 2023, "Humpback"): instructions for human-written text.

For each document segment (see `segments`), the backward step asks the model which instruction
the segment would answer, with few-shot (output, instruction) pairs shown in reverse
(self-augmentation): the built-in seed pairs, or a seed file's (`load_seed_pairs`), without the
pairs whose output alone does not answer their instruction (an input, or a reference to text
not shown); then the model grades each (instruction, segment) pair on a 5-point rubric,
with a brief rationale first, through structured output with a fallback parse of a final
"Score: N" line (self-curation). Pairs at or above `min_score` are kept. Across rounds, the pairs
curated in one round join the few-shot pool of the next.

Documents are untrusted: their text is fenced, markers that could end the fence or open a chat
turn are defused in the prompt (the record keeps the original text), templates render in one
pass, and nothing from a document is executed or used as a path.

Segments are capped by `max_chars` when documents are cut; a segment longer than
`MAX_SEGMENT_CHARS` characters (possible only with a larger `max_chars`) is never placed into a
prompt: it is a reject of stage "segment", counted in the round's `oversized`. A rejected segment
longer than that keeps only a snippet of its text (its document and span locate the rest), so a
huge paragraph is not copied into the rejects.

Inputs: `Segment`s, an engine (and optionally a separate backward engine), a `BacktranslationConfig`.
Outputs: `Record`s (instruction generated, output = the segment, with source, offsets, score,
rationale, round, tag "document-derived") and `Reject`s with stage and reason.
Reference: Li et al., "Self-Alignment with Instruction Backtranslation", 2023.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from synth.engines import ChatRequest, Engine
from synth.filters.judge import GRADE_SCHEMA, parse_grade
from synth.filters.novelty import snippet
from synth.generators.documents import Segment, read_documents
from synth.generators.provenance import Origin, request_seed
from synth.generators.seed_pairs import load_seed_pairs, unusable
from synth.prompts import TemplateSet, defuse
from synth.schemas import BacktranslationConfig, Message, Outcome, Record, Reject, SeedTask

GENERATOR = "backtranslation"
TEMPLATES = TemplateSet(("backtranslation_backward", "backtranslation_grade"))
_PREFILL = "Instruction:"
# More than a small model's context holds (about 4 characters a token); generous on purpose.
MAX_SEGMENT_CHARS = 20_000
OVERSIZED = f"longer than {MAX_SEGMENT_CHARS} characters"


def clean_instruction(text: str) -> str:
    """The instruction a backward reply wrote: its first paragraph, without quotes or labels."""
    first = text.strip().split("\n\n", 1)[0].strip()
    first = re.sub(r"^(instruction|request)\s*:\s*", "", first, flags=re.IGNORECASE)
    return first.strip().strip('"').strip()


@dataclass
class RoundStats:
    graded: int = 0
    kept: int = 0
    unparseable: int = 0
    oversized: int = 0
    scores: Counter[int] = field(default_factory=Counter)


@dataclass
class ChunkResult(Outcome):
    stats: RoundStats = field(default_factory=RoundStats)


def seed_pairs(seeds: Sequence[SeedTask]) -> list[tuple[str, str]]:
    """(instruction, output) few-shot pairs from seed tasks whose first instance can be a backward
    demo (see `synth.generators.seed_pairs.unusable`: no input, no reference to unseen text, an
    answer worth showing)."""
    return [
        (s.instruction, s.instances[0].output)
        for s in seeds
        if s.instances and unusable(s.instruction, s.instances[0].input, s.instances[0].output) is None
    ]


class BacktranslationGenerator:
    """Self-augmentation and self-curation of segment chunks; the few-shot pool grows per round."""

    def __init__(
        self,
        config: BacktranslationConfig,
        engine: Engine,
        pairs: Sequence[tuple[str, str]],
        run_id: str = "",
        backward: Engine | None = None,
        trained_backward: bool = False,
    ) -> None:
        self.config = config
        self.engine = engine
        self.backward = backward or engine
        self.run_id = run_id
        self.origin = Origin(GENERATOR, run_id, config.seed, self.backward.model_name)
        self.pool = list(pairs)
        # A backward model fine-tuned on (output -> instruction) chats (self-training) is asked with
        # the segment alone, the way it was trained; an untrained model gets the few-shot prompt.
        self.trained_backward = trained_backward
        t = TEMPLATES.load(config.language)
        self.t_backward = t["backtranslation_backward"]
        self.t_grade = t["backtranslation_grade"]

    def backward_request(self, seg: Segment, rng: random.Random, where: tuple) -> ChatRequest:
        sampling = self.config.augment_sampling.model_copy(
            update={"seed": request_seed(self.config.seed, *where, "backward")}
        )
        if self.trained_backward:
            return ChatRequest(messages=[Message(role="user", content=seg.text)], sampling=sampling, tag="backward")
        demos = rng.sample(self.pool, min(self.config.num_demos, len(self.pool)))
        examples = "\n\n".join(
            f"[TEXT START]\n{defuse(out)}\n[TEXT END]\n{_PREFILL} {defuse(ins)}" for ins, out in demos
        )
        return ChatRequest(
            messages=[Message(role="user", content=self.t_backward.render(examples=examples, output=defuse(seg.text)))],
            prefill=_PREFILL,
            sampling=sampling,
            # The instruction is the reply's first paragraph; a model that writes on is done.
            stop=["[TEXT START]", "\n\n"],
            tag=self.t_backward.name,
        )

    def grade_request(self, instruction: str, seg: Segment, where: tuple) -> ChatRequest:
        prompt = self.t_grade.render(instruction=defuse(instruction), output=defuse(seg.text))
        return ChatRequest(
            messages=[Message(role="user", content=prompt)],
            sampling=self.config.grade_sampling.model_copy(
                update={"seed": request_seed(self.config.seed, *where, "grade")}
            ),
            json_schema=GRADE_SCHEMA,
            tag=self.t_grade.name,
        )

    def run_chunk(self, batch: int, rnd: int, segments: Sequence[Segment]) -> ChunkResult:
        out = ChunkResult()
        rng = random.Random(f"{self.config.seed}:{batch}:{rnd}")
        wheres = [(batch, rnd, i) for i in range(len(segments))]
        oversized = 0
        if any(len(s.text) > MAX_SEGMENT_CHARS for s in segments):
            for s in segments:
                if len(s.text) > MAX_SEGMENT_CHARS:
                    oversized += 1
                    out.rejects.append(segment_reject(s, OVERSIZED, self.run_id, self.config.seed))
            kept = [i for i, s in enumerate(segments) if len(s.text) <= MAX_SEGMENT_CHARS]
            segments, wheres = [segments[i] for i in kept], [wheres[i] for i in kept]
        requests = [self.backward_request(s, rng, w) for s, w in zip(segments, wheres, strict=True)]
        candidates: list[tuple[int, str]] = []
        for i, reply in enumerate(self.backward.chat(requests)):
            instruction = clean_instruction(reply.text)
            if reply.finish_reason == "error":
                out.rejects.append(
                    self._reject(rnd, segments[i], "augmentation", "engine error", detail=reply.error or "")
                )
            elif reply.finish_reason == "length":
                out.rejects.append(
                    self._reject(
                        rnd,
                        segments[i],
                        "augmentation",
                        "instruction cut off at the token limit",
                        instruction=instruction,
                        raw=reply.text,
                    )
                )
            elif not instruction:
                out.rejects.append(self._reject(rnd, segments[i], "augmentation", "empty instruction", raw=reply.text))
            else:
                candidates.append((i, instruction))
        graded = self.grade(rnd, [(segments[i], ins, wheres[i]) for i, ins in candidates])
        out.kept, out.stats = graded.kept, graded.stats
        out.stats.oversized = oversized
        out.rejects.extend(graded.rejects)
        return out

    def grade(self, rnd: int, candidates: Sequence[tuple[Segment, str, tuple]]) -> ChunkResult:
        """Self-curation: grade each (segment, instruction, where) pair with `self.engine` and keep
        those at or above `min_score` (the self-training loop re-grades stored candidates with it)."""
        out = ChunkResult()
        grades = self.engine.chat([self.grade_request(ins, seg, where) for seg, ins, where in candidates])
        for (seg, instruction, _), reply in zip(candidates, grades, strict=True):
            parsed = None if reply.finish_reason == "error" else parse_grade(reply.text)
            if parsed is None:
                out.stats.unparseable += 1
                reason = "engine error" if reply.finish_reason == "error" else "unparseable grade"
                out.rejects.append(
                    self._reject(
                        rnd,
                        seg,
                        "self-curation",
                        reason,
                        instruction=instruction,
                        raw=reply.text,
                        detail=reply.error or "",
                    )
                )
                continue
            score, rationale = parsed
            out.stats.graded += 1
            out.stats.scores[score] += 1
            judged = dict(
                instruction=instruction,
                judge_score=float(score),
                judge_rationale=rationale,
                judge_model=self.engine.model_name,
            )
            if score < self.config.min_score:
                reason = f"score {score} below {self.config.min_score}"
                out.rejects.append(self._reject(rnd, seg, "self-curation", reason, **judged))
            else:
                out.stats.kept += 1
                tags = ["backtranslation", "document-derived"]
                made = {"output": seg.text, "tags": tags, **self._common(rnd, seg), **judged}
                out.kept.append(Record(**made))
        return out

    def _common(self, rnd: int, seg: Segment) -> dict:
        return self.origin.fields(
            template=None if self.trained_backward else self.t_backward,
            sampling=self.config.augment_sampling,
            round=rnd,
            source_doc=seg.doc,
            source_start=seg.start,
            source_end=seg.end,
        )

    def _reject(self, rnd: int, seg: Segment, stage: str, reason: str, **fields: object) -> Reject:
        fields.setdefault("output", seg.text)
        return Reject(stage=stage, reason=reason, **self._common(rnd, seg), **fields)  # type: ignore[arg-type]


def segment_reject(seg: Segment, reason: str, run_id: str, seed: int) -> Reject:
    """A segment dropped by the cleaning rules, kept with its text and place (a segment longer
    than `MAX_SEGMENT_CHARS` with a snippet of its text: the place locates the rest)."""
    big = len(seg.text) > MAX_SEGMENT_CHARS
    return Reject(
        generator=GENERATOR,
        stage="segment",
        reason=reason,
        run_id=run_id,
        seed=seed,
        output=snippet(seg.text, 200) if big else seg.text,
        detail=f"{len(seg.text)} characters" if big else "",
        source_doc=seg.doc,
        source_start=seg.start,
        source_end=seg.end,
    )


def document_reject(doc: str, reason: str, run_id: str, seed: int) -> Reject:
    return Reject(generator=GENERATOR, stage="document", reason=reason, run_id=run_id, seed=seed, source_doc=doc)


def check_inputs(config: BacktranslationConfig, dataset: str | Path) -> None:
    """Read the seed pairs and open the corpus (its schema, and its first usable document)."""
    TEMPLATES.load(config.language)  # the language has every prompt
    if config.seeds is not None:
        load_seed_pairs(config.seeds, config.language, training=config.self_train is not None)
    read_documents(config.docs, config.text_field)
