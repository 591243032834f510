"""Recycling pairs by reflection: a teacher rewrites each pair, a student keeps what it can learn from.

Reflection-tuning (Li et al. 2023) and Selective Reflection-tuning (Li et al. 2024), after the
reference code (tianyi-lab/Reflection_Tuning). For each source pair (Q0, A0) the teacher, greedily:
1. reflects on the instruction: critiques Q0 and A0, then writes a new instruction and its answer
   between markers, in one reply (variant Q);
2. reflects on the response: critiques A0 and writes a better answer to Q0 (variant A);
3. reflects on the response of Q: a better answer to Q's instruction (variant QA).
A reply without its markers is asked again (`reask` times), then becomes a reject with the reply.

The student scores each pair by IFD, ppl(answer | instruction) / ppl(answer), and reversed IFD,
ppl(instruction | "guess the instruction of this answer") / ppl(instruction): perplexities from its
log-probabilities (nothing is generated), the ratios the reference's selection uses. Then, as the
reference's selection script decides:
- the new instruction counts as better where Q's IFD is above the original's; then QA is written if
  its r-IFD is below Q's (its answer makes the instruction easier to recover);
- otherwise A is written if its r-IFD is below the original's;
- the written pair's IFD and r-IFD must both be below 1.
At most one pair is written per source pair; every variant not written is a reject with its scores
and the reason. With `selection: none` (Reflection-tuning) QA is written wherever it was made.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from synth.engines import ChatRequest, Completion, Engine
from synth.engines.base import ContinuationRequest
from synth.generators.provenance import Origin, request_seed
from synth.generators.sources import SourceError, load_instructions
from synth.prompts import Template, TemplateSet, defuse
from synth.schemas import Example, Message, Outcome, Record, Reject, Sampling, content_id
from synth.schemas.records import user_prompt
from synth.schemas.reflection import Reflection, ReflectionConfig
from synth.selection.scorers import assistant_header, user_turn

GENERATOR = "reflection"
INSTRUCTION = "reflect_instruction"
RESPONSE = "reflect_response"
RESPONSE_INPUT = "reflect_response_input"
GUESS = "reflect_guess_instruction"  # the student's reversed prompt
TEMPLATES = TemplateSet(
    (
        INSTRUCTION,
        f"{INSTRUCTION}_system",
        RESPONSE,
        f"{RESPONSE}_system",
        RESPONSE_INPUT,
        f"{RESPONSE_INPUT}_system",
        GUESS,
    )
)

QA, A, Q, ORIGINAL = "instruction+response", "response", "instruction", "original"
# With `prefill_markers`, the marker each reply is started with (the model continues after it).
_OPENING = {INSTRUCTION: "[New Instruction]", RESPONSE: "[Better Answer]", RESPONSE_INPUT: "[Better Answer]"}

# The teacher's markers (the reference's, kept in every language: the parse looks for them).
_NEW_INSTRUCTION = re.compile(r"\[New Instruction\](.*?)(?:\[End\]|\[New Answer\]|New Answer:)", re.DOTALL)
_NEW_INSTRUCTION_PLAIN = re.compile(r"New Instruction:(.*?)(?:\[End\]|\[New Answer\]|New Answer:)", re.DOTALL)
_NEW_ANSWER = re.compile(r"\[New Answer\](.*?)(?:\[End\]|$)", re.DOTALL)
_NEW_ANSWER_PLAIN = re.compile(r"New Answer:(.*?)(?:\[End\]|$)", re.DOTALL)
_BETTER_ANSWER = re.compile(r"\[Better Answer\](.*?)(?=\[End\]|\[Better Answer\]|$)", re.DOTALL)
_STEP_THREE = re.compile(r"\s*\n\s*3\.\s*$")  # the numbered step after an instruction left without [End]
# What each language's prompt shows in the markers' place: a reply that copies it wrote nothing.
_PLACEHOLDERS = {"en": ("your instruction", "your answer"), "zh": ("你的指令", "你的回答")}


def _placeholder(text: str, language: str) -> bool:
    return any(p in text.lower() for p in _PLACEHOLDERS.get(language, ()) + _PLACEHOLDERS["en"])


def parse_instruction_reflection(text: str, language: str = "en") -> tuple[str, str] | str:
    """The new instruction and its answer from an instruction reflection, or why there are none."""
    found = (_NEW_INSTRUCTION if "[New Instruction]" in text else _NEW_INSTRUCTION_PLAIN).search(text)
    instruction = _STEP_THREE.sub("", found.group(1)).strip() if found else ""
    answer_at = (_NEW_ANSWER if "[New Answer]" in text else _NEW_ANSWER_PLAIN).search(text)
    answer = answer_at.group(1).strip() if answer_at else ""
    if not instruction or _placeholder(instruction, language):
        return "no new instruction between the markers"
    if not answer or answer.upper() == "N/A" or _placeholder(answer, language):
        return "no new answer between the markers"
    return instruction, answer


def parse_response_reflection(text: str, language: str = "en") -> str | tuple[str]:
    """The better answer from a response reflection (a 1-tuple), or why there is none: the reply
    must hold exactly one."""
    answers = [a.strip() for a in _BETTER_ANSWER.findall(text)]
    if len(answers) != 1:
        return f"{len(answers)} better answers between the markers (one expected)"
    if not answers[0] or answers[0].upper() == "N/A" or _placeholder(answers[0], language):
        return "no better answer between the markers"
    return (answers[0],)


@dataclass
class Variant:
    """One pair of a source pair's family, with the student's scores once scored."""

    kind: str
    instruction: str
    input: str
    output: str
    template: Template | None = None
    cut: bool = False  # the teacher's reply ended at its token limit
    ifd: float | None = None
    r_ifd: float | None = None
    error: str = ""  # why the student could not score it


@dataclass
class ReflectionResult(Outcome):
    pairs: int = 0  # source pairs read
    written: dict[str, int] = field(default_factory=dict)  # variant -> pairs written


class ReflectionGenerator:
    """Reflects on one chunk of source pairs at a time: the teacher is `engine`, the student
    `student` (it must score continuations)."""

    def __init__(
        self, config: ReflectionConfig, engine: Engine, student: Engine | None = None, run_id: str = ""
    ) -> None:
        self.config = config
        self.teacher = engine
        self.student = student if student is not None else engine
        if config.selection == "student" and not callable(getattr(self.student, "score_continuations", None)):
            raise ValueError(
                f"the student engine {self.student.model_name} cannot score continuations (IFD needs "
                "log-probabilities): give a vLLM student_engine, or selection: none"
            )
        self.origin = Origin(GENERATOR, run_id, config.seed, engine.model_name)
        self.templates = TEMPLATES.load(config.language)
        get = getattr(self.student, "chat_template", None)
        template = get() if callable(get) else None
        self.tokenizer = getattr(template, "tokenizer", None)

    # -- the teacher ------------------------------------------------------------------------------

    def _request(self, name: str, item_id: str, attempt: int, **values: str) -> ChatRequest:
        system, user = self.templates[f"{name}_system"], self.templates[name]
        base = self.config.teacher_sampling
        sampling = Sampling(**base.model_dump()).model_copy(
            update={"seed": request_seed(self.config.seed, item_id, name, attempt)}
        )
        messages = [
            Message(role="system", content=system.text),
            Message(role="user", content=user.render(**{k: defuse(v) for k, v in values.items()})),
        ]
        prefill = _OPENING[name] if self.config.prefill_markers else None
        return ChatRequest(messages=messages, sampling=sampling, prefill=prefill, tag=name)

    def _ask(
        self, asks: list[tuple[str, str, dict[str, str]]], parse: Callable[[str], object]
    ) -> list[tuple[object, Completion]]:
        """Each (template name, item id, values) asked of the teacher, and asked again while its reply
        does not parse (up to `reask` more times); the last parse (a value, or why not) and reply
        (its text opening with the marker the reply was started with, if any)."""
        results: list[tuple[object, Completion] | None] = [None] * len(asks)
        todo = list(range(len(asks)))
        for attempt in range(self.config.reask + 1):
            if not todo:
                break
            replies = self.teacher.chat([self._request(asks[i][0], asks[i][1], attempt, **asks[i][2]) for i in todo])
            retry = []
            for i, reply in zip(todo, replies, strict=True):
                if self.config.prefill_markers and reply.finish_reason != "error":
                    reply = reply.model_copy(update={"text": f"{_OPENING[asks[i][0]]} {reply.text.lstrip()}"})
                parsed = f"engine error: {reply.error}" if reply.finish_reason == "error" else parse(reply.text)
                results[i] = (parsed, reply)
                if isinstance(parsed, str) and reply.finish_reason != "error":
                    retry.append(i)
            todo = retry
        return [r for r in results if r is not None]

    # -- the student ------------------------------------------------------------------------------

    def _score(self, variants: list[Variant]) -> None:
        """IFD and r-IFD of each variant, in one batch of four scorings per variant."""
        header, guess, cap = assistant_header(self.tokenizer), self.templates[GUESS], self.config.student_max_tokens
        requests: list[ContinuationRequest] = []
        for v in variants:
            question = user_prompt(v.instruction, v.input)
            reverse = user_turn(self.tokenizer, guess.render(response=v.output))
            for context, text in (
                (user_turn(self.tokenizer, question), v.output),
                (header, v.output),
                (reverse, question),
                (header, question),
            ):
                requests.append(ContinuationRequest(context=context, continuation=text, max_tokens=cap, tag=GUESS))
        scores = self.student.score_continuations(requests) if requests else []  # type: ignore[attr-defined]
        for n, v in enumerate(variants):
            given_a, alone_a, given_q, alone_q = scores[4 * n : 4 * n + 4]
            failed = next(
                (s.error or "no log-probabilities" for s in scores[4 * n : 4 * n + 4] if s.error or not s.logprobs), ""
            )
            if failed:
                v.error = failed
                continue
            v.ifd, v.r_ifd = _ratio(given_a.logprobs, alone_a.logprobs), _ratio(given_q.logprobs, alone_q.logprobs)

    # -- a chunk ----------------------------------------------------------------------------------

    def run_chunk(self, batch: int, items: Sequence[Example]) -> ReflectionResult:
        out = ReflectionResult(pairs=len(items))
        usable = []
        for item in items:
            if item.output.strip():
                usable.append(item)
            else:
                out.rejects.append(self._reject(batch, item, None, "no response to reflect on", ""))
        language, selective = self.config.language, self.config.selection == "student"
        question = [(INSTRUCTION, i.id, {"instruction": i.prompt, "output": i.output}) for i in usable]
        asked = self._ask(question, lambda t: parse_instruction_reflection(t, language))
        families: list[dict[str, Variant]] = []
        failed: list[tuple[Example, dict[str, Variant], str, str]] = []  # a reflection that did not parse
        for item, (parsed, reply) in zip(usable, asked, strict=True):
            family = {ORIGINAL: Variant(ORIGINAL, item.instruction, item.input, item.output)}
            if isinstance(parsed, tuple):
                family[Q] = Variant(
                    Q, parsed[0], "", parsed[1], self.templates[INSTRUCTION], reply.finish_reason == "length"
                )
            else:
                failed.append((item, family, f"instruction reflection: {parsed}", reply.text))
            families.append(family)
        # The answer of the original (Selective Reflection-tuning only) and of Q, reflected on.
        answers = []
        for item, family in zip(usable, families, strict=True):
            if selective:
                name = RESPONSE_INPUT if item.input else RESPONSE
                values = {"instruction": item.instruction, "output": item.output} | (
                    {"input": item.input} if item.input else {}
                )
                answers.append((A, item, family, (name, item.id, values)))
            if Q in family:
                q = family[Q]
                answers.append(
                    (QA, item, family, (RESPONSE, f"{item.id}:{Q}", {"instruction": q.instruction, "output": q.output}))
                )
        replies = self._ask([a[3] for a in answers], lambda t: parse_response_reflection(t, language))
        for (kind, item, family, ask), (parsed, reply) in zip(answers, replies, strict=True):
            if isinstance(parsed, tuple):
                base = family[Q] if kind == QA else family[ORIGINAL]
                template = self.templates[ask[0]]
                family[kind] = Variant(
                    kind, base.instruction, base.input, parsed[0], template, reply.finish_reason == "length"
                )
            else:
                failed.append((item, family, f"{kind} reflection: {parsed}", reply.text))
        if selective:
            self._score([v for family in families for v in family.values()])
        for item, family, reason, raw in failed:  # with the original's scores
            out.rejects.append(self._reject(batch, item, None, reason, raw, family[ORIGINAL]))
        for item, family in zip(usable, families, strict=True):
            self._decide(batch, item, family, out)
        return out

    def _decide(self, batch: int, item: Example, family: dict[str, Variant], out: ReflectionResult) -> None:
        """Write the variant the rule keeps; every other variant made is a reject with the reason."""
        ori, q, a, qa = family[ORIGINAL], family.get(Q), family.get(A), family.get(QA)
        reasons: dict[str, str] = {}
        chosen: Variant | None = None
        if self.config.selection == "none":
            chosen = qa
            if q is not None:
                reasons[Q] = "kept only with its answer reflected on (QA)"
        elif q is not None and _above(q.ifd, ori.ifd):
            reasons[Q] = "kept only with its answer reflected on (QA)"
            if a is not None:
                reasons[A] = "the new instruction is harder to follow: only QA can be written"
            if qa is not None and _below(qa.r_ifd, q.r_ifd):
                chosen = qa
            elif qa is not None:
                reasons[QA] = "r-IFD not below the new instruction's: its answer is no easier to guess from"
        else:
            for v in (q, qa):
                if v is not None:
                    reasons[v.kind] = "the new instruction's IFD is not above the original's: no harder to follow"
            if a is not None and _below(a.r_ifd, ori.r_ifd):
                chosen = a
            elif a is not None:
                reasons[A] = "r-IFD not below the original's: the instruction is no easier to guess from the answer"
        if (
            chosen is not None
            and self.config.selection == "student"
            and not (_below(chosen.ifd, 1.0) and _below(chosen.r_ifd, 1.0))
        ):
            reasons[chosen.kind] = "IFD or r-IFD not below 1"
            chosen = None
        for kind, reason in reasons.items():
            v = family[kind]
            detail = f"student could not score it: {v.error}" if v.error else ""
            out.rejects.append(self._reject(batch, item, v, reason, "", ori, detail))
        if chosen is not None:
            out.kept.append(self._record(batch, item, chosen, ori))
            out.written[chosen.kind] = out.written.get(chosen.kind, 0) + 1

    # -- records ----------------------------------------------------------------------------------

    def _block(self, item: Example, v: Variant | None, ori: Variant | None) -> Reflection:
        return Reflection(
            variant=v.kind if v is not None else ORIGINAL,
            original_instruction=item.instruction,
            original_input=item.input,
            original_output=item.output,
            ifd=v.ifd if v is not None else None,
            r_ifd=v.r_ifd if v is not None else None,
            original_ifd=ori.ifd if ori is not None else None,
            original_r_ifd=ori.r_ifd if ori is not None else None,
            teacher=self.teacher.model_name,
            student=self.student.model_name if self.config.selection == "student" else "",
        )

    def _fields(self, batch: int, item: Example, v: Variant | None) -> dict[str, object]:
        sampling = Sampling(**self.config.teacher_sampling.model_dump())
        template = v.template if v is not None else None
        return self.origin.fields(
            batch, template=template, sampling=sampling, parent_id=item.id or None, source_id=item.id or None
        )

    def _record(self, batch: int, item: Example, v: Variant, ori: Variant) -> Record:
        tags = ["recycled", v.kind, *(["cut-off"] if v.cut else [])]
        return Record(  # its messages: the variant's chat form, as a `Record` fills them in
            instruction=v.instruction,
            input=v.input,
            output=v.output,
            tags=tags,
            reflection=self._block(item, v, ori),
            **self._fields(batch, item, v),
        )

    def _reject(
        self,
        batch: int,
        item: Example,
        v: Variant | None,
        reason: str,
        raw: str,
        ori: Variant | None = None,
        detail: str = "",
    ) -> Reject:
        """A variant not written, or (`v` None) a source pair whose reflection failed: the engine
        failed (stage `engine`) or the reply did not parse (`raw` holds it)."""
        text = v if v is not None else Variant(ORIGINAL, item.instruction, item.input, item.output)
        # Two source pairs of the same text (ids "x" and "x-2") give two rejects.
        where = f"reflection\x1f{reason}\x1f{text.kind}\x1f{item.id}"
        return Reject(
            id=content_id(text.instruction, text.input, f"{text.output}\x1f{where}"),
            instruction=text.instruction,
            input=text.input,
            output=text.output,
            stage="engine" if ": engine error" in reason else "reflection",
            reason=reason,
            detail=detail,
            raw=raw,
            reflection=self._block(item, v, ori),
            **self._fields(batch, item, v),
        )


def _ratio(given: list[float], alone: list[float]) -> float | None:
    """ppl(text | context) / ppl(text alone) over the tokens both scored (exp of the mean losses'
    difference); None where undefined."""
    n = min(len(given), len(alone))
    if n == 0:
        return None
    difference = (-sum(given[:n]) + sum(alone[:n])) / n
    return math.exp(difference) if math.isfinite(difference) and difference < 700 else None


def _above(x: float | None, y: float | None) -> bool:
    return x is not None and y is not None and x > y


def _below(x: float | None, y: float | None) -> bool:
    return x is not None and y is not None and x < y


def check_inputs(config: ReflectionConfig, dataset: str | Path) -> None:
    """Read the source: pairs to recycle, written to another dataset than their source, and at
    least one with a response."""
    TEMPLATES.load(config.language)  # the language has every prompt
    if Path(config.source).resolve() == Path(dataset).resolve():
        raise SourceError(f"{config.source}: write the recycled pairs to another dataset than their source")
    items = load_instructions(config.source)[: config.limit]
    if not any(item.output.strip() for item in items):
        raise SourceError(f"{config.source}: {len(items)} instructions, none with a response to recycle")
