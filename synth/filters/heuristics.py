"""Cheap rule-based checks on generated instructions and instances; each failure names its reason."""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass, field

from synth.filters.base import FilterResult, reject
from synth.schemas import Record
from synth.schemas.curation import HeuristicsConfig

# Tasks a text-only model cannot do: Self-Instruct's list, and that list extended with audio and video.
SELF_INSTRUCT_KEYWORDS: tuple[str, ...] = (
    "image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map", "maps",
    "draw", "plot", "go to",
)  # fmt: skip
NON_TEXT_KEYWORDS: tuple[str, ...] = (*SELF_INSTRUCT_KEYWORDS, "video", "audio", "music", "flowchart", "diagram")


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


_PLACEHOLDER = re.compile(
    r"^\s*(\[[^\]]*\]|<[^>]*>|\{[^}]*\}|todo|tbd|n/?a|none|null|placeholder|lorem ipsum.*|\.\.\.|-+)\s*$", re.IGNORECASE
)


def _symbol_share(text: str) -> float:
    chars = [c for c in text if not c.isspace()]
    return sum(not c.isalnum() for c in chars) / len(chars) if chars else 0.0


def _repeated_line_share(text: str) -> float:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return 1 - len(set(lines)) / len(lines) if len(lines) > 1 else 0.0


class HeuristicFilter:
    """Record-level rules, each switchable: lengths, refusals, non-text requests, placeholders,
    output equal to input, cut-off outputs (tagged "cut-off" by generators), symbols, repetition."""

    stage = "heuristic"

    def __init__(self, config: HeuristicsConfig) -> None:
        self.config = config
        self.instructions = InstructionHeuristics(min_words=0, max_words=10**9)

    def reason(self, r: Record) -> str | None:
        c = self.config
        n_ins, n_out = len(r.instruction.split()), len(r.output.split())
        if c.placeholders:
            for name in ("instruction", "output"):
                if not getattr(r, name).strip() or _PLACEHOLDER.match(getattr(r, name)):
                    return f"empty or placeholder {name}"
        if n_ins < c.min_instruction_words:
            return f"instruction under {c.min_instruction_words} words"
        if n_ins > c.max_instruction_words:
            return f"instruction over {c.max_instruction_words} words"
        if n_out < c.min_output_words:
            return f"output under {c.min_output_words} words"
        if n_out > c.max_output_words:
            return f"output over {c.max_output_words} words"
        if c.cut_off and "cut-off" in r.tags:
            return "output cut off at the token limit"
        if c.refusals and is_short_refusal(r.output):
            return "refusal or apology"
        if c.non_text and (m := self.instructions._pattern.search(r.instruction)):
            return f"non-text modality ({m.group(1).lower()})"
        if (
            c.output_equals_input
            and r.input.strip()
            and " ".join(r.input.lower().split()) == " ".join(r.output.lower().split())
        ):
            return "output equals input"
        for name in ("instruction", "output"):
            text = getattr(r, name)
            if _symbol_share(text) > c.max_symbol_share:
                return f"{name} mostly symbols"
            if _repeated_line_share(text) > c.max_repeated_line_share:
                return f"{name} mostly repeated lines"
        return None

    def apply(self, records: Sequence[Record]) -> FilterResult:
        out = FilterResult()
        for r in records:
            if why := self.reason(r):
                out.rejects.append(reject(r, self.stage, why))
            else:
                out.kept.append(r)
        return out
