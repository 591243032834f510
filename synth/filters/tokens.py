"""One tokenization policy for every text filter, aware of scripts written without spaces.

Chinese, Japanese, Korean, Thai, Lao, Khmer, Myanmar and Tibetan do not put spaces between words,
so to a word-based rule a whole sentence of theirs is one "word": length rules reject it, ROUGE-L
and MinHash see two sentences that differ in one character as unrelated, and n-grams never match
inside a longer text. Under this policy every letter of those scripts (with the combining marks
that follow it) is a token of its own; elsewhere tokens are words, as each filter always made them.
English results do not move: ASCII text goes through the very patterns the filters used before
(also the fast path), and polars' tokens of any text without such letters are its old `\\w+`.
Beyond ASCII, Python reads `\\w` as Unicode does (a combining mark belongs to its word), and ROUGE-L
keeps accented letters inside their words.

One pattern serves Python (the `regex` package) and polars (Rust's regex engine): both read
Unicode script classes, class subtraction (`--`) and intersection (`&&`) the same way.
"""

from __future__ import annotations

import re

import regex

SPACELESS_SCRIPTS: tuple[str, ...] = (
    "Han",
    "Hiragana",
    "Katakana",
    "Hangul",
    "Thai",
    "Lao",
    "Khmer",
    "Myanmar",
    "Tibetan",
)

# The class body of those scripts' characters. The long-vowel marks ー and ｰ belong to no script
# (Unicode: Common) but are only ever written inside kana words, so they count as kana.
_SPACELESS = "".join(rf"\p{{{s}}}" for s in SPACELESS_SCRIPTS) + r"\u30FC\uFF70"
# One spaceless letter (a word character, not itself a mark) with the marks that follow it, so a
# Thai consonant and its vowel or tone marks make one token.
_LETTER = rf"[[{_SPACELESS}]&&[\w--\p{{M}}]]\p{{M}}*"

WORD_PATTERN = rf"{_LETTER}|[\w--[{_SPACELESS}]]+"
"""Word tokens: runs of `\\w`, except that each spaceless letter stands alone. For polars'
`str.extract_all` (MinHash word shingles) as well as Python; on text without spaceless letters it
finds what the same engine's `\\w+` finds."""

_WORDS = regex.compile(WORD_PATTERN, regex.V1)
# ROUGE-L's words also split at "_", as the reference scorer's [a-z0-9]+ does.
_ROUGE = regex.compile(rf"{_LETTER}|[\w--[_{_SPACELESS}]]+", regex.V1)
_HAS_SPACELESS = regex.compile(rf"[{_SPACELESS}]", regex.V1)
# Inside a whitespace chunk that holds spaceless letters: those letters, and the runs between them
# (kept only when they hold a word character: a run of punctuation such as "。" is not a word).
_IN_CHUNK = regex.compile(rf"{_LETTER}|[^\s{_SPACELESS}]+", regex.V1)
_WORD_CHAR = regex.compile(r"\w")

_ASCII_WORD = re.compile(r"\w+")
_ASCII_ROUGE = re.compile(r"[a-z0-9]+")


def word_tokens(text: str) -> list[str]:
    """Runs of word characters (`\\w+`), each spaceless letter a token of its own (n-grams)."""
    if text.isascii():
        return _ASCII_WORD.findall(text)
    return _WORDS.findall(text)


def rouge_tokens(text: str) -> list[str]:
    """ROUGE-L tokens: lowercased runs of letters and digits, each spaceless letter alone.

    On ASCII text these are the reference `rouge_score` tokens without stemming (runs of
    [a-z0-9]); beyond ASCII, accented and other letters stay inside their words instead of
    splitting them ("café" is one token, not "caf").
    """
    lowered = text.lower()
    if lowered.isascii():
        return _ASCII_ROUGE.findall(lowered)
    return _ROUGE.findall(lowered)


def words(text: str) -> list[str]:
    """Words for length rules: whitespace-separated, as `str.split()`, except that a chunk holding
    spaceless letters counts each of them as a word, plus each run between them that holds a
    letter or digit ("用Python写" is three words, "诗。" one)."""
    if text.isascii() or _HAS_SPACELESS.search(text) is None:
        return text.split()
    out: list[str] = []
    for chunk in text.split():
        if _HAS_SPACELESS.search(chunk) is None:
            out.append(chunk)
        else:
            # isalnum() is the quick yes for a lone letter; the search decides the rest.
            out.extend(t for t in _IN_CHUNK.findall(chunk) if t.isalnum() or _WORD_CHAR.search(t))
    return out
