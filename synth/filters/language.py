"""Which language a text is written in, and a filter that keeps records in the run's language.

Detection is script first, statistics second. A text whose letters are mostly Han, Kana or Hangul
is Chinese, Japanese or Korean by its script alone (robust for short and mixed texts such as an
instruction that names a Python function). Anything else goes to lingua's detector, a maintained
library whose models ship in its wheel (nothing is downloaded), limited to the languages that
instruction data is commonly made in (`COMMON`, plus the run's own) to bound its memory. A text too
short or too ambiguous to tell is "unknown" and never rejected for it.

The filter writes the detected language of each record's instruction (and input) into its
`language` column, and drops a record whose instruction, or whose output, is detectably in another
language than the run's. An output in another language is kept when the instruction names that
language (a translation task).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence
from functools import cache
from typing import TYPE_CHECKING

from synth.filters.base import reject
from synth.schemas import Outcome, Record

if TYPE_CHECKING:
    from lingua import LanguageDetector

# ISO 639-1 codes lingua weighs a non-CJK text against (plus the run's language).
COMMON = (
    "en",
    "zh",
    "ja",
    "ko",
    "fr",
    "de",
    "es",
    "pt",
    "it",
    "nl",
    "ru",
    "uk",
    "pl",
    "cs",
    "tr",
    "ar",
    "fa",
    "he",
    "hi",
    "bn",
    "ur",
    "vi",
    "th",
    "id",
    "ms",
    "sv",
    "da",
    "nb",
    "fi",
    "el",
    "hu",
    "ro",
)
# Fewer letters than this in a text: too little to tell its language.
MIN_LETTERS = 12
UNKNOWN = ""

# How an instruction may name a language it asks for (English and Chinese names).
_NAMES = {
    "en": ("english", "英语", "英文"),
    "zh": ("chinese", "mandarin", "中文", "汉语", "普通话"),
    "ja": ("japanese", "日语", "日文"),
    "ko": ("korean", "韩语", "韩文", "朝鲜语"),
    "fr": ("french", "法语", "法文"),
    "de": ("german", "德语", "德文"),
    "es": ("spanish", "西班牙语"),
    "pt": ("portuguese", "葡萄牙语"),
    "it": ("italian", "意大利语"),
    "ru": ("russian", "俄语"),
    "ar": ("arabic", "阿拉伯语"),
}


def _script_counts(text: str) -> tuple[int, int, int, int]:
    """(Han, Kana, Hangul, all letters) in `text`."""
    han = kana = hangul = letters = 0
    for ch in text:
        if not ch.isalpha():
            continue
        letters += 1
        code = ord(ch)
        if 0x3040 <= code <= 0x30FF or 0x31F0 <= code <= 0x31FF or 0xFF66 <= code <= 0xFF9F:
            kana += 1
        elif 0xAC00 <= code <= 0xD7AF or 0x1100 <= code <= 0x11FF or 0x3130 <= code <= 0x318F:
            hangul += 1
        elif unicodedata.name(ch, "").startswith("CJK"):
            han += 1
    return han, kana, hangul, letters


@cache
def _detector(languages: tuple[str, ...]) -> LanguageDetector:
    from lingua import IsoCode639_1, Language, LanguageDetectorBuilder

    chosen = [Language.from_iso_code_639_1(getattr(IsoCode639_1, code.upper())) for code in languages]
    return LanguageDetectorBuilder.from_languages(*chosen).with_minimum_relative_distance(0.1).build()


def supported(code: str) -> bool:
    """Whether the detector knows the language `code` (ISO 639-1)."""
    from lingua import IsoCode639_1

    return hasattr(IsoCode639_1, code.upper())


def languages_of(texts: Iterable[str], expected: str = "en") -> list[str]:
    """The ISO 639-1 code of each text's language, or `UNKNOWN`."""
    texts = list(texts)
    out = [UNKNOWN] * len(texts)
    rest: list[int] = []
    for i, text in enumerate(texts):
        han, kana, hangul, letters = _script_counts(text)
        cjk = han + kana + hangul
        if letters < MIN_LETTERS and cjk < 2:
            continue
        if cjk >= 2 and cjk >= 0.3 * letters:
            out[i] = "ja" if kana >= 0.1 * cjk else "ko" if hangul > han else "zh"
        elif letters >= MIN_LETTERS:
            rest.append(i)
    if rest:
        pool = tuple(sorted({*COMMON, *([expected] if supported(expected) else [])}))
        found = _detector(pool).detect_languages_in_parallel_of([texts[i] for i in rest])
        for i, language in zip(rest, found, strict=True):
            out[i] = language.iso_code_639_1.name.lower() if language is not None else UNKNOWN
    return out


def names_language(instruction: str, code: str) -> bool:
    """Whether `instruction` names the language `code` (so an answer in it is what was asked)."""
    text = instruction.lower()
    return any(name in text for name in _NAMES.get(code, ()))


class LanguageFilter:
    """Fills `language` and drops records written in another language than `language`."""

    stage = "language"

    def __init__(self, language: str) -> None:
        self.language = language

    def apply(self, records: Sequence[Record]) -> Outcome:
        result = Outcome()
        prompts = languages_of([f"{r.instruction}\n{r.input}".strip() for r in records], self.language)
        outputs = languages_of([r.output for r in records], self.language)
        for r, asked, answered in zip(records, prompts, outputs, strict=True):
            r.language = asked or None
            if asked not in (UNKNOWN, self.language):
                result.rejects.append(reject(r, self.stage, f"instruction in {asked}, not {self.language}"))
            elif answered not in (UNKNOWN, self.language) and not names_language(r.instruction, answered):
                result.rejects.append(reject(r, self.stage, f"output in {answered}, not {self.language}"))
            else:
                result.kept.append(r)
        return result
