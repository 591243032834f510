"""Cheap rule-based checks on generated instructions and instances; each failure names its reason."""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field

from synth.filters.base import reject
from synth.filters.lexicons import ANY_WORD, LEXICONS
from synth.filters.tokens import words
from synth.schemas import Outcome, Record
from synth.schemas.curation import HeuristicsConfig

# Tasks a text-only model cannot do: Self-Instruct's list, and that list extended with audio and video.
SELF_INSTRUCT_KEYWORDS: tuple[str, ...] = (
    "image",
    "images",
    "graph",
    "graphs",
    "picture",
    "pictures",
    "file",
    "files",
    "map",
    "maps",
    "draw",
    "plot",
    "go to",
)
NON_TEXT_KEYWORDS: tuple[str, ...] = (*SELF_INSTRUCT_KEYWORDS, "video", "audio", "music", "flowchart", "diagram")


# Punctuation a text may not start with beyond ASCII's: closing brackets, dashes, and the likes of
# "，" and "。", not opening brackets and quotes (a Chinese question may open with 《 or “) nor the
# Spanish ¿ and ¡.
_NOT_OPENING = frozenset({"Pc", "Pd", "Pe", "Po"})
_OPENERS = "¿¡"


@dataclass(frozen=True)
class InstructionHeuristics:
    """The instruction filters of Self-Instruct (Wang et al. 2022), configurable.

    `reason(text)` returns None for a keeper, else a short reason naming the rule it broke. Words
    are `tokens.words` (a Chinese or Japanese character is one). `language` is the run's (ISO 639-1,
    lowercase): the rule against a non-ASCII first character, there to catch garbage in English
    output, holds only for English; elsewhere a text may not start with non-ASCII punctuation
    either (except an opening bracket or quote, or ¿ and ¡).
    """

    min_words: int = 3
    max_words: int = 150
    keywords: tuple[str, ...] = NON_TEXT_KEYWORDS
    banned_prefixes: tuple[str, ...] = ("write a program",)
    language: str = "en"
    _pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        alternatives = "|".join(re.escape(k) for k in self.keywords)
        object.__setattr__(self, "_pattern", re.compile(rf"\b({alternatives})\b", re.IGNORECASE))

    def reason(self, text: str) -> str | None:
        stripped = text.strip()
        if not stripped:
            return "empty instruction"
        n = len(words(stripped))
        if n <= self.min_words:
            return f"too short (<= {self.min_words} words)"
        if n > self.max_words:
            return f"too long (> {self.max_words} words)"
        if m := self._pattern.search(stripped):
            return f"non-text modality ({m.group(1).lower()})"
        if stripped.lower().startswith(self.banned_prefixes):
            return "starts with 'write a program'"
        first = stripped[0]
        english = self.language == "en"
        if first in string.punctuation or (
            not english and unicodedata.category(first) in _NOT_OPENING and first not in _OPENERS
        ):
            return "starts with punctuation"
        if english and not first.isascii():
            return "starts with a non-ASCII character"
        return None


def only_punctuation_and_stop_words(text: str, language: str = "en") -> bool:
    """True for text with no word outside the language's stop-word list (an empty text included).
    Where we have no list for the language, only text without any letter or digit is."""
    if (lexicon := LEXICONS.get(language)) is None:
        return ANY_WORD.search(text) is None
    return lexicon.only_stop_words(text)


def is_short_refusal(text: str, max_words: int = 80, language: str = "en") -> bool:
    """True for a reply that apologizes or declines ("sorry", "I cannot"...) in under `max_words`
    words (`tokens.words`: a Chinese character is one). Never for a language without a list."""
    lexicon = LEXICONS.get(language)
    return lexicon is not None and len(words(text)) < max_words and lexicon.refusal.search(text) is not None


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
    output equal to input, cut-off outputs (tagged "cut-off" by generators), symbols, repetition.
    Lengths count `tokens.words`; refusal phrases are those of the configured language."""

    stage = "heuristic"

    def __init__(self, config: HeuristicsConfig) -> None:
        self.config = config
        self.instructions = InstructionHeuristics(min_words=0, max_words=10**9)

    def reason(self, r: Record) -> str | None:
        c = self.config
        n_ins, n_out = len(words(r.instruction)), len(words(r.output))
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
        if c.refusals and is_short_refusal(r.output, language=c.language or "en"):
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

    def apply(self, records: Sequence[Record]) -> Outcome:
        out = Outcome()
        for r in records:
            if why := self.reason(r):
                out.rejects.append(reject(r, self.stage, why))
            else:
                out.kept.append(r)
        return out
