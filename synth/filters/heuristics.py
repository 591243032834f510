"""Cheap rule-based checks on generated instructions and instances; each failure names its reason."""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field

# Tasks a text-only model cannot do (Self-Instruct's list, extended with audio and video).
NON_TEXT_KEYWORDS: tuple[str, ...] = (
    "image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map", "maps",
    "draw", "plot", "go to", "video", "audio", "music", "flowchart", "diagram",
)  # fmt: skip


@dataclass(frozen=True)
class InstructionHeuristics:
    """The instruction filters of Self-Instruct (Wang et al. 2022), configurable.

    `reason(text)` returns None for a keeper, else a short reason naming the rule it broke.
    """

    min_words: int = 3
    max_words: int = 150
    keywords: tuple[str, ...] = NON_TEXT_KEYWORDS
    banned_prefixes: tuple[str, ...] = ("write a program",)
    _pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        words = "|".join(re.escape(k) for k in self.keywords)
        object.__setattr__(self, "_pattern", re.compile(rf"\b({words})\b", re.IGNORECASE))

    def reason(self, text: str) -> str | None:
        stripped = text.strip()
        if not stripped:
            return "empty instruction"
        n = len(stripped.split())
        if n <= self.min_words:
            return f"too short (<= {self.min_words} words)"
        if n > self.max_words:
            return f"too long (> {self.max_words} words)"
        if m := self._pattern.search(stripped):
            return f"non-text modality ({m.group(1).lower()})"
        if stripped.lower().startswith(self.banned_prefixes):
            return "starts with 'write a program'"
        first = stripped[0]
        if first in string.punctuation:
            return "starts with punctuation"
        if not first.isascii():
            return "starts with a non-ASCII character"
        return None
