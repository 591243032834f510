"""Quality judged by a model: a rubric, structured output (rationale, then a 1-5 score), a threshold.

One batched engine call per batch. A reply that does not parse is a reject with its raw text,
never a pass. Kept and rejected records carry the score, the rationale, the judge's model and the
rubric's hash.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path

from synth.engines import ChatRequest, Engine
from synth.filters.base import reject
from synth.prompts import defuse, load_template, reply_object
from synth.schemas import Message, Outcome, Record
from synth.schemas.curation import JudgeConfig
from synth.schemas.files import ConfigFileError
from synth.shards.files import checked_text

GRADE_SCHEMA = {
    "type": "object",
    "properties": {
        "rationale": {"type": "string", "maxLength": 600},
        "score": {"type": "integer", "enum": [1, 2, 3, 4, 5]},
    },
    "required": ["rationale", "score"],
    "additionalProperties": False,
}
_SCORE_LINE = re.compile(r"^\W*score\W*([1-5])\W*$", re.IGNORECASE | re.MULTILINE)


def parse_grade(text: str) -> tuple[int, str] | None:
    """(score, rationale) from a grading reply: JSON first, else a last "Score: N" line."""
    if (data := reply_object(text)) is not None:
        score = data.get("score")
        if isinstance(score, int) and not isinstance(score, bool) and 1 <= score <= 5:
            return score, str(data.get("rationale", "")).strip()
        return None
    matches = list(_SCORE_LINE.finditer(text))
    if not matches:
        return None
    last = matches[-1]
    return int(last.group(1)), text[: last.start()].strip()


def read_rubric(path: str | Path) -> str:
    """A rubric file's text for the judge's prompt: UTF-8, a leading byte-order mark dropped; a
    missing or empty file, bytes that are not UTF-8 or a control character (an escape sequence,
    a NUL) raise `ConfigFileError` naming the file and line, so none reaches a prompt."""
    text = checked_text(Path(path), ConfigFileError).strip()
    if not text:
        raise ConfigFileError(f"{path}: the rubric file is empty")
    return text


class JudgeFilter:
    """Keeps records the engine scores at or above `threshold` on the rubric."""

    stage = "judge"

    def __init__(self, config: JudgeConfig, engine: Engine) -> None:
        self.config = config
        self.engine = engine
        if config.rubric:
            self.rubric = read_rubric(config.rubric)
        else:
            self.rubric = load_template("judge_rubric").text
        self.rubric_hash = hashlib.sha256(self.rubric.encode()).hexdigest()[:12]
        self.template = load_template("judge")

    def request(self, r: Record) -> ChatRequest:
        shown = f"{r.instruction}\n\n{r.input}" if r.input else r.instruction
        # Single-pass fill: neither the rubric nor the record's text is scanned for placeholders.
        prompt = self.template.render(rubric=self.rubric, instruction=defuse(shown), output=defuse(r.output))
        return ChatRequest(
            messages=[Message(role="user", content=prompt)],
            sampling=self.config.sampling,
            json_schema=GRADE_SCHEMA,
            tag="judge",
        )

    def apply(self, records: Sequence[Record]) -> Outcome:
        result = Outcome()
        replies = self.engine.chat([self.request(r) for r in records])
        for r, reply in zip(records, replies, strict=True):
            parsed = None if reply.finish_reason == "error" else parse_grade(reply.text)
            if parsed is None:
                reason = "engine error" if reply.finish_reason == "error" else "unparseable judgement"
                result.rejects.append(
                    reject(
                        r,
                        self.stage,
                        reason,
                        detail=reply.error or "",
                        raw=reply.text,
                        judge_model=self.engine.model_name,
                        judge_rubric=self.rubric_hash,
                    )
                )
                continue
            score, rationale = parsed
            judged = r.model_copy(
                update={
                    "judge_score": float(score),
                    "judge_rationale": rationale,
                    "judge_model": self.engine.model_name,
                    "judge_rubric": self.rubric_hash,
                }
            )
            if score < self.config.threshold:
                result.rejects.append(reject(judged, self.stage, f"score {score} below {self.config.threshold}"))
            else:
                result.kept.append(judged)
        return result
