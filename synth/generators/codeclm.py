"""CodecLM (Wang et al. 2024): seed instructions encoded into metadata, decoded into instructions
tailored by Self-Rubrics, and selected by Contrastive Filtering between a strong and a target model.

Encode (paper §4.1): the strong model (the run's engine) names each seed instruction's use case and
at most three skills; a reply without both is a reject (stage `parse`). Decode (§4.1): the
metadata becomes `instructions_per_metadata` basic instructions (a numbered list), and Self-Rubrics
(§4.2) writes the metadata's rubrics and an improving action for each. Contrastive Filtering (§4.3):
each instruction is answered by the strong model and by the target model, and the strong model
scores the two answers (1-10) in both orders, averaged; the gap is strong minus target. A gap
larger than the threshold keeps the pair (the strong answer; the target's where the target wins
by that much); otherwise one action drawn at random makes the instruction harder and it goes round
again, for at most `iterations` iterations, the basic instruction counting as the first. Then it is
a reject of stage `contrastive`, with its scores. Every record and contrastive reject carries the
`codeclm` block: the metadata, the rounds applied, rubrics, actions and scores.

Every request's seed comes from the run seed and the seed instruction's id, the instruction's
number and the iteration, so a chunk made again makes the same records.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synth.engines import ChatRequest, Engine
from synth.engines.base import Completion
from synth.generators.codeclm_replies import (
    SCORES_SCHEMA,
    labelled,
    labels,
    numbered,
    parse_metadata,
    parse_rubrics,
    parse_scores,
    seed_text,
)
from synth.generators.provenance import Origin, request_seed
from synth.generators.seeds import load_seed_tasks
from synth.prompts import TemplateSet, defuse
from synth.schemas import Message, Outcome, Record, Reject, Sampling, SeedTask
from synth.schemas.codeclm import Codeclm, CodeclmConfig

GENERATOR = "codeclm"
ENCODE, DECODE, RUBRICS, IMPROVE, JUDGE = (
    "codeclm_encode",
    "codeclm_decode",
    "codeclm_rubrics",
    "codeclm_improve",
    "codeclm_judge",
)
STRONG, TARGET = "codeclm_strong", "codeclm_target"  # request tags of the two models' answers
TEMPLATES = TemplateSet((ENCODE, DECODE, RUBRICS, IMPROVE, JUDGE))


@dataclass
class Meta:
    """One seed instruction's metadata, and the Self-Rubrics written for it."""

    seed: SeedTask
    use_case: str
    skills: list[str]
    rubrics: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)


@dataclass
class Candidate:
    """One decoded instruction on its way through the iterations."""

    meta: Meta
    number: int  # its place among its metadata's instructions
    basic: str
    instruction: str
    applied: list[str] = field(default_factory=list)  # the actions applied, in order
    scores: tuple[float, float] | None = None  # strong, target (averaged over both orders)
    answers: tuple[Completion, Completion] | None = None


@dataclass
class ChunkResult(Outcome):
    """A chunk's records and rejects, with counts: seeds read, metadata, instructions decoded,
    records kept by the rounds applied, and the tokens of a separate target engine."""

    counts: Counter[str] = field(default_factory=Counter)


class CodeclmGenerator:
    """Makes one chunk of seed instructions at a time: the strong model is `engine`, the target
    `target` (the same engine when None)."""

    def __init__(self, config: CodeclmConfig, engine: Engine, target: Engine | None = None, run_id: str = "") -> None:
        self.config = config
        self.strong = engine
        self.target = target if target is not None else engine
        self.templates = TEMPLATES.load(config.language)
        self.words = labels(config.language)
        self.origin = Origin(GENERATOR, run_id, config.seed, engine.model_name)

    def _sampling(self, base: Sampling, *where: object) -> Sampling:
        return Sampling(**base.model_dump(exclude={"seed"}), seed=request_seed(self.config.seed, *where))

    def _ask(self, template: str, sampling: Sampling, prefill: str | None = None, **values: object) -> ChatRequest:
        text = self.templates[template].render(**{k: defuse(str(v)) for k, v in values.items()})
        return ChatRequest(
            messages=[Message(role="user", content=text)], sampling=sampling, prefill=prefill, tag=template
        )

    def run_chunk(self, batch: int, seeds: Sequence[SeedTask]) -> ChunkResult:
        out = ChunkResult()
        out.counts["seeds"] += len(seeds)
        metas = self._encode(batch, seeds, out) if seeds else []
        candidates = self._decode(batch, metas, out) if metas else []
        for iteration in range(1, self.config.iterations + 1):
            if not candidates:
                break
            candidates = self._iteration(batch, iteration, candidates, out)
        return out

    # -- encode and decode ------------------------------------------------------------------------

    def _encode(self, batch: int, seeds: Sequence[SeedTask], out: ChunkResult) -> list[Meta]:
        label = self.words["use_case"] + self.words["colon"]
        gen = self.config.generation_sampling
        requests = [
            self._ask(ENCODE, self._sampling(gen, "encode", s.id), prefill=label, instruction=seed_text(s))
            for s in seeds
        ]
        metas = []
        for seed, request, reply in zip(seeds, requests, self.strong.chat(requests), strict=True):
            use_case, skills = parse_metadata(label + reply.text, self.config.language)
            if reply.finish_reason == "error":
                out.rejects.append(
                    self._failed(batch, seed.instruction, "engine", "engine error (encode)", reply, request)
                )
            elif not use_case or not skills:
                missing = "use case" if not use_case else "skills"
                out.rejects.append(
                    self._failed(batch, seed.instruction, "parse", f"metadata without {missing}", reply, request)
                )
            else:
                metas.append(Meta(seed, use_case, skills))
        out.counts["metadata"] += len(metas)
        return metas

    def _decode(self, batch: int, metas: list[Meta], out: ChunkResult) -> list[Candidate]:
        """The basic instructions of each metadata, and its rubrics and actions (one engine call)."""
        gen, n = self.config.generation_sampling, self.config.instructions_per_metadata
        values = [{"use_case": m.use_case, "skills": ", ".join(m.skills)} for m in metas]
        decode = [
            self._ask(DECODE, self._sampling(gen, "decode", m.seed.id), "1.", count=n, **v)
            for m, v in zip(metas, values, strict=True)
        ]
        rubric_prefill = self.words["rubrics"] + self.words["colon"] + "\n1."
        rubrics = [
            self._ask(
                RUBRICS, self._sampling(gen, "rubrics", m.seed.id), rubric_prefill, count=self.config.rubrics, **v
            )
            for m, v in zip(metas, values, strict=True)
        ]
        replies = self.strong.chat([*decode, *rubrics])
        candidates = []
        for i, meta in enumerate(metas):
            basic, written = replies[i], replies[len(metas) + i]
            meta.rubrics, meta.actions = parse_rubrics(rubric_prefill + written.text, self.config.language)
            meta.rubrics, meta.actions = meta.rubrics[: self.config.rubrics], meta.actions[: self.config.rubrics]
            items = numbered("1." + basic.text) if basic.finish_reason != "error" else []
            if basic.finish_reason == "length" and len(items) <= n:
                items = items[:-1]  # the last one was cut off
            items = items[:n]
            if not items:
                reason = "engine error (decode)" if basic.finish_reason == "error" else "no instructions decoded"
                stage = "engine" if basic.finish_reason == "error" else "parse"
                out.rejects.append(self._failed(batch, meta.seed.instruction, stage, reason, basic, decode[i], meta))
            candidates += [Candidate(meta, k, text, text) for k, text in enumerate(items)]
        out.counts["basic instructions"] += len(candidates)
        return candidates

    # -- one iteration: answers, scores, and what goes round again -----------------------------

    def _iteration(self, batch: int, iteration: int, candidates: list[Candidate], out: ChunkResult) -> list[Candidate]:
        answered = self._answer(batch, iteration, candidates, out)
        scored = self._judge(batch, iteration, answered, out)
        again, threshold = [], self.config.threshold
        for c in scored:
            assert c.scores is not None
            gap = c.scores[0] - c.scores[1]
            if gap > threshold or (self.config.keep_target_wins and -gap > threshold):
                out.kept.append(self._record(batch, c, "strong" if gap > 0 else "target"))
                out.counts[f"kept after {len(c.applied)} rounds"] += 1
            elif iteration == self.config.iterations:
                reason = f"quality gap within {threshold:g} after {iteration} iterations"
                out.rejects.append(self._reject(batch, c, "contrastive", reason))
            else:
                again.append(c)
        return self._improve(batch, iteration, again, out) if again else []

    def _answer(self, batch: int, iteration: int, candidates: list[Candidate], out: ChunkResult) -> list[Candidate]:
        """Both models' answers to each candidate's current instruction."""
        sampling = self.config.response_sampling

        def ask(tag: str, c: Candidate) -> ChatRequest:
            where = (tag, c.meta.seed.id, c.number, iteration)
            messages = [Message(role="user", content=c.instruction)]
            return ChatRequest(messages=messages, sampling=self._sampling(sampling, *where), tag=tag)

        strong = self.strong.chat([ask(STRONG, c) for c in candidates])
        target = self.target.chat([ask(TARGET, c) for c in candidates])
        if self.target is not self.strong:
            out.counts["target prompt tokens"] += sum(r.prompt_tokens for r in target)
            out.counts["target completion tokens"] += sum(r.completion_tokens for r in target)
        answered = []
        for c, s, t in zip(candidates, strong, target, strict=True):
            failed = next((r for r in (s, t) if r.finish_reason == "error" or not r.text.strip()), None)
            if failed is None:
                c.answers = (s, t)
                answered.append(c)
                continue
            who = "strong" if failed is s else "target"
            reason = f"engine error ({who} answer)" if failed.finish_reason == "error" else f"empty {who} answer"
            out.rejects.append(
                self._reject(batch, c, "engine" if failed.finish_reason == "error" else "parse", reason, failed)
            )
        return answered

    def _judge(self, batch: int, iteration: int, candidates: list[Candidate], out: ChunkResult) -> list[Candidate]:
        """The strong model scores both answers in both orders; the two scores of each are averaged."""
        requests = []
        for c in candidates:
            assert c.answers is not None
            s, t = (a.text.strip() for a in c.answers)
            for order, (one, two) in enumerate(((s, t), (t, s))):
                sampling = self._sampling(
                    self.config.judge_sampling, "judge", c.meta.seed.id, c.number, iteration, order
                )
                request = self._ask(JUDGE, sampling, question=c.instruction, answer_1=one, answer_2=two)
                request.json_schema = SCORES_SCHEMA if self.config.structured_judge else None
                requests.append(request)
        replies = self.strong.chat(requests)
        scored = []
        for i, c in enumerate(candidates):
            first, second = replies[2 * i], replies[2 * i + 1]
            a, b = parse_scores(first.text), parse_scores(second.text)
            if a is None or b is None:
                bad = first if a is None else second
                stage, reason = (
                    ("engine", "engine error (judge)")
                    if bad.finish_reason == "error"
                    else ("judge", "judge reply without two scores from 1 to 10")
                )
                out.rejects.append(self._reject(batch, c, stage, reason, bad))
                continue
            c.scores = ((a[0] + b[1]) / 2, (a[1] + b[0]) / 2)
            scored.append(c)
        return scored

    def _improve(self, batch: int, iteration: int, candidates: list[Candidate], out: ChunkResult) -> list[Candidate]:
        """One Self-Rubrics round: each instruction rewritten by one of its metadata's actions."""
        ready, requests = [], []
        for c in candidates:
            if not c.meta.actions:
                out.rejects.append(self._reject(batch, c, "parse", "no Self-Rubrics actions to improve with"))
                continue
            where = (c.meta.seed.id, c.number, iteration)
            action = random.Random(request_seed(self.config.seed, "action", *where)).choice(c.meta.actions)
            sampling = self._sampling(self.config.generation_sampling, "improve", *where)
            ready.append((c, action))
            requests.append(self._ask(IMPROVE, sampling, action=action, instruction=c.instruction))
        improved = []
        for (c, action), reply in zip(ready, self.strong.chat(requests), strict=True):
            text = reply.text.strip()
            if reply.finish_reason != "error" and (found := labelled(text, "Instruction") or labelled(text, "指令")):
                text = found
            if reply.finish_reason == "error" or not text:
                reason = "engine error (improve)" if reply.finish_reason == "error" else "empty improved instruction"
                out.rejects.append(
                    self._reject(batch, c, "engine" if reply.finish_reason == "error" else "parse", reason, reply)
                )
                continue
            c.instruction, c.scores, c.answers = text, None, None
            c.applied.append(action)
            improved.append(c)
        return improved

    # -- records and rejects ------------------------------------------------------------------------

    def _block(self, c: Candidate, answer: str = "") -> Codeclm:
        strong, target = c.scores if c.scores is not None else (None, None)
        return Codeclm(
            seed_id=c.meta.seed.id,
            use_case=c.meta.use_case,
            skills="; ".join(c.meta.skills),
            rounds=len(c.applied),
            basic_instruction=c.basic,
            rubrics="\n".join(c.meta.rubrics),
            actions="\n".join(c.applied),
            strong_score=strong,
            target_score=target,
            gap=None if strong is None or target is None else strong - target,
            answer=answer,
            strong_model=self.strong.model_name,
            target_model=self.target.model_name,
        )

    def _provenance(
        self, batch: int, c: Candidate, sampling: Sampling | None = None, model: str | None = None
    ) -> dict[str, Any]:
        template = self.templates[IMPROVE if c.applied else DECODE]
        lineage = {"round": len(c.applied), "operation": "self-rubrics" if c.applied else "decode"}
        return self.origin.fields(batch, template=template, sampling=sampling, model=model, **lineage)

    def _record(self, batch: int, c: Candidate, answer: str) -> Record:
        assert c.answers is not None
        reply = c.answers[0] if answer == "strong" else c.answers[1]
        model = self.strong.model_name if answer == "strong" else self.target.model_name
        tag = STRONG if answer == "strong" else TARGET
        where = (tag, c.meta.seed.id, c.number, len(c.applied) + 1)
        sampling = self._sampling(self.config.response_sampling, *where)
        return Record(
            instruction=c.instruction,
            output=reply.text.strip(),
            tags=[
                "codeclm",
                *(["target-answer"] if answer == "target" else []),
                *(["cut-off"] if reply.finish_reason == "length" else []),
            ],
            codeclm=self._block(c, answer),
            **self._provenance(batch, c, sampling, model),
        )

    def _reject(self, batch: int, c: Candidate, stage: str, reason: str, reply: Completion | None = None) -> Reject:
        strong = c.answers[0].text.strip() if c.answers is not None else ""
        return Reject(
            instruction=c.instruction,
            output=strong,
            stage=stage,  # type: ignore[arg-type]
            reason=reason,
            detail=reply.error or "" if reply is not None else "",
            raw=reply.text if reply is not None else "",
            codeclm=self._block(c),
            **self._provenance(batch, c),
        )

    def _failed(
        self,
        batch: int,
        text: str,
        stage: str,
        reason: str,
        reply: Completion,
        request: ChatRequest,
        meta: Meta | None = None,
    ) -> Reject:
        """A seed whose metadata, or a metadata whose instructions, could not be had."""
        block = None
        if meta is not None:
            block = Codeclm(seed_id=meta.seed.id, use_case=meta.use_case, skills="; ".join(meta.skills))
        template = self.templates[request.tag]
        return Reject(
            instruction=text,
            stage=stage,  # type: ignore[arg-type]
            reason=reason,
            detail=reply.error or "",
            raw=reply.text,
            codeclm=block,
            **self.origin.fields(batch, template=template, sampling=request.sampling),
        )


def check_inputs(config: CodeclmConfig, dataset: str | Path) -> None:
    """Read the seed instructions (Self-Instruct's seed formats)."""
    TEMPLATES.load(config.language)  # the language has every prompt
    load_seed_tasks(config.seeds, config.language)
