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


# Common English function words (our own list); a reply made only of these says nothing.
STOP_WORDS: frozenset[str] = frozenset(
    [
        "a",
        "about",
        "above",
        "after",
        "again",
        "against",
        "all",
        "am",
        "an",
        "and",
        "any",
        "are",
        "as",
        "at",
        "be",
        "because",
        "been",
        "before",
        "being",
        "below",
        "between",
        "both",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "doing",
        "down",
        "during",
        "each",
        "few",
        "for",
        "from",
        "further",
        "had",
        "has",
        "have",
        "having",
        "he",
        "her",
        "here",
        "hers",
        "herself",
        "him",
        "himself",
        "his",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "itself",
        "just",
        "me",
        "more",
        "most",
        "my",
        "myself",
        "no",
        "nor",
        "not",
        "now",
        "of",
        "off",
        "on",
        "once",
        "only",
        "or",
        "other",
        "our",
        "ours",
        "ourselves",
        "out",
        "over",
        "own",
        "same",
        "she",
        "should",
        "so",
        "some",
        "such",
        "than",
        "that",
        "the",
        "their",
        "theirs",
        "them",
        "themselves",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "through",
        "to",
        "too",
        "under",
        "until",
        "up",
        "very",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "while",
        "who",
        "whom",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
        "yours",
        "yourself",
        "yourselves",
        "yes",
        "ok",
        "okay",
        "well",
        "oh",
    ]
)
_WORD = re.compile(r"[A-Za-z0-9']+")
_REFUSAL = re.compile(
    r"\b(sorry|apologi[sz]e|i cannot|i can't|i can not|i am unable|i'm unable|as an ai)\b", re.IGNORECASE
)


def only_punctuation_and_stop_words(text: str) -> bool:
    """True for text with no word outside the stop-word list (an empty text included)."""
    return all(w.lower().strip("'") in STOP_WORDS for w in _WORD.findall(text))


def is_short_refusal(text: str, max_words: int = 80) -> bool:
    """True for a reply that apologizes or declines ("sorry", "I cannot"...) in under `max_words` words."""
    return len(text.split()) < max_words and _REFUSAL.search(text) is not None
