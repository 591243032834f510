"""Reading CodecLM's replies: the encoder's metadata, numbered lists (decoded instructions,
rubrics and actions) and the judge's two scores. Lenient where a small model is loose (either
colon width, numbered or bulleted items), strict where a value matters (both scores on the scale)."""

from __future__ import annotations

import re

from synth.prompts import reply_object
from synth.schemas import SeedTask

MAX_SKILLS = 3  # the paper's encoder lists at most three skills
SCALE = (1.0, 10.0)  # the judge's score scale (paper: 10)

# The labels the templates use and the replies are read by, by language.
LABELS = {
    "en": {"use_case": "Use case", "skills": "Skills", "rubrics": "Rubrics", "actions": "Actions", "colon": ":"},
    "zh": {"use_case": "用途", "skills": "技能", "rubrics": "评判标准", "actions": "改进动作", "colon": "："},
}
# The judge's reply as structured output (`structured_judge`): the two scores, nothing else.
_SCORE = {"type": "integer", "enum": list(range(1, 11))}
SCORES_SCHEMA = {
    "type": "object",
    "properties": {"assistant_1": _SCORE, "assistant_2": _SCORE},
    "required": ["assistant_1", "assistant_2"],
    "additionalProperties": False,
}
_ITEM = re.compile(r"^\s*(?:\d+\s*[.)、:：]|[-*•])\s*(.+?)\s*$")
_SCORES = re.compile(r"(\d+(?:\.\d+)?)\s*(?:[,，/;]|\s)\s*(\d+(?:\.\d+)?)")


def labels(language: str) -> dict[str, str]:
    return LABELS.get(language, LABELS["en"])


def seed_text(task: SeedTask) -> str:
    """A seed task as the encoder reads it: its instruction, and its first input where it has one."""
    given = next((i.input for i in task.instances if i.input.strip()), "")
    return f"{task.instruction}\n{given}".strip()


def labelled(text: str, label: str) -> str:
    """The rest of the first line that opens with `label` and a colon (either width), or ""."""
    found = re.search(rf"^\W*{re.escape(label)}\s*[:：]\s*(.*)$", text, flags=re.MULTILINE | re.IGNORECASE)
    return found[1].strip() if found else ""


def parse_metadata(text: str, language: str) -> tuple[str, list[str]]:
    """The use case and the skills (at most three) of an encoder reply."""
    words = labels(language)
    skills = re.split(r"[,，、;；]", labelled(text, words["skills"]))
    return labelled(text, words["use_case"]), [s.strip(" .。") for s in skills if s.strip(" .。")][:MAX_SKILLS]


def numbered(text: str) -> list[str]:
    """The items of the numbered (or bulleted) list in `text`, in order."""
    return [m[1] for line in text.splitlines() if (m := _ITEM.match(line)) and m[1].strip()]


def parse_rubrics(text: str, language: str) -> tuple[list[str], list[str]]:
    """The rubrics and the actions of a Self-Rubrics reply (lists under their labels)."""
    words = labels(language)
    parts = re.split(rf"^\W*{re.escape(words['actions'])}\s*[:：]", text, maxsplit=1, flags=re.MULTILINE)
    if len(parts) < 2:
        return numbered(text), []
    return numbered(parts[0]), numbered(parts[1])


def parse_scores(text: str) -> tuple[float, float] | None:
    """The two scores of a judge reply (its first line holding two on the 1-10 scale, or the
    structured reply's two), or None."""
    data = reply_object(text)
    if data is not None:
        a, b = data.get("assistant_1"), data.get("assistant_2")
        ok = all(isinstance(s, int | float) and not isinstance(s, bool) and SCALE[0] <= s <= SCALE[1] for s in (a, b))
        return (float(a), float(b)) if ok else None  # type: ignore[arg-type]
    for line in text.strip().splitlines():
        if found := _SCORES.search(line):
            a, b = float(found[1]), float(found[2])
            return (a, b) if all(SCALE[0] <= s <= SCALE[1] for s in (a, b)) else None
    return None
