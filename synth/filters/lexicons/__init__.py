"""A language's word lists for the reply rules of the heuristics, one TOML file per language.

`<code>.toml` (ISO 639-1, lowercase) in this folder holds:

- `spaceless`: true for a language written without spaces (Chinese, Japanese, Thai...). Stop words
  are then taken out of a text as substrings, longest first, and refusal phrases match anywhere;
  otherwise stop words are whole words and refusal phrases match at word boundaries.
- `stop_words`: words that say nothing on their own, separated by whitespace. A reply made only of
  these (and punctuation) is empty of content.
- `refusals`: apologies and refusals, each a regular expression, matched without regard to case. A
  short reply that contains one is a refusal.

Adding a language to these rules is adding its file; a language without one has no stop words and no
refusal phrases (another language's lists would misjudge its text). A file that cannot be read
raises `LexiconError` naming it.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

FOLDER = Path(__file__).parent
_WORD = re.compile(r"[A-Za-z0-9']+")
ANY_WORD = re.compile(r"\w")  # a letter, digit or underscore, of any script


class LexiconError(ValueError):
    """A lexicon file that cannot be used; the message names the file."""


@dataclass(frozen=True)
class Lexicon:
    """A language's lists for the reply rules: stop words and refusal phrases (see the module)."""

    stop_words: frozenset[str]
    refusal: re.Pattern[str]
    spaceless: bool = False
    _stop: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        longest_first = sorted(self.stop_words, key=len, reverse=True)
        stop = re.compile("|".join(map(re.escape, longest_first))) if self.spaceless else None
        object.__setattr__(self, "_stop", stop)

    def only_stop_words(self, text: str) -> bool:
        """True for text with no word outside `stop_words` (an empty text included)."""
        if self._stop is not None:
            return ANY_WORD.search(self._stop.sub(" ", text)) is None
        return all(w.lower().strip("'") in self.stop_words for w in _WORD.findall(text))


def load_lexicon(path: Path) -> Lexicon:
    """The lexicon in the TOML file at `path`; a problem raises `LexiconError` naming the file."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise LexiconError(f"{path}: {e}") from e
    spaceless, stop_words, refusals = data.get("spaceless", False), data.get("stop_words", ""), data.get("refusals")
    if not isinstance(spaceless, bool):
        raise LexiconError(f"{path}: 'spaceless' must be true or false")
    if not isinstance(stop_words, str):
        raise LexiconError(f"{path}: 'stop_words' must be a string of words separated by whitespace")
    if not isinstance(refusals, list) or not refusals or not all(isinstance(r, str) and r for r in refusals):
        raise LexiconError(f"{path}: 'refusals' must be a non-empty list of regular expressions")
    if unknown := sorted(set(data) - {"spaceless", "stop_words", "refusals"}):
        raise LexiconError(f"{path}: unknown field(s) {', '.join(unknown)}")
    alternatives = "|".join(f"(?:{r})" for r in refusals)
    try:
        refusal = re.compile(alternatives if spaceless else rf"\b(?:{alternatives})\b", re.IGNORECASE)
    except re.error as e:
        raise LexiconError(f"{path}: 'refusals': {e}") from e
    words = stop_words.split() if spaceless else [w.lower() for w in stop_words.split()]
    return Lexicon(frozenset(words), refusal, spaceless)


def load_lexicons(folder: Path = FOLDER) -> dict[str, Lexicon]:
    """Every `<code>.toml` in `folder`, by language code."""
    return {path.stem: load_lexicon(path) for path in sorted(folder.glob("*.toml"))}


LEXICONS: dict[str, Lexicon] = load_lexicons()
"""The built-in lexicons by ISO 639-1 code (this folder's files)."""
