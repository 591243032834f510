"""Seed (instruction, output) pairs for the backward prompts of instruction backtranslation.

The backward step shows a few seed pairs in reverse (output first, then the instruction it
answers) before asking for the instruction of a document segment. A segment is a complete
output with no separate input, so a useful demo must be the same: an instruction whose output
alone answers it. `unusable` says which pairs are not (and why); they are skipped, counted and
reported, never shown.

A seed file is JSONL (one object a line) or one JSON array of objects (the Alpaca format); each
object has `instruction`, an optional `input` and `output` (other keys are ignored). Without a
file the built-in Self-Instruct seed tasks are used (their first instance's input and output).
Problems name the file and line (and the item, in an array): bytes that are not UTF-8, invalid
JSON, strings holding an unpaired surrogate escape, a missing or non-text field.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from typing_extensions import TypedDict

from synth.generators.seeds import SeedFileError, load_seed_tasks
from synth.shards.files import json_line, lone_surrogate, read_utf8, utf8_lines
from synth.text import value_control_problem

log = logging.getLogger(__name__)

# An answer this short teaches nothing about the document-length outputs the backward step sees.
MIN_OUTPUT_CHARS = 41
# More than a small model's context holds (about 4 characters a token); generous on purpose.
MAX_PAIR_CHARS = 20_000

HAS_INPUT = "has an input"
UNSEEN_INPUT = "instruction refers to text not shown"
SHORT_OUTPUT = f"output shorter than {MIN_OUTPUT_CHARS} characters"
OVERSIZED = f"larger than {MAX_PAIR_CHARS} characters"

# Nouns for a piece of supplied material ("summarize this passage", "fix these sentences").
_MATERIAL = (
    r"(?:text|texts|passages?|paragraphs?|sentences?|articles?|essays?|documents?|excerpts?|quotes?|"
    r"quotations?|code|snippets?|programs?|scripts?|e-?mails?|letters?|messages?|stor(?:y|ies)|poems?|"
    r"reviews?|tweets?|posts?|statements?|dialogues?|conversations?|tables?|lists?|data|dataset|inputs?|"
    r"words?|phrases?|papers?|reports?|summar(?:y|ies)|strings?|arrays?|sequences?)"
)
_UNSEEN = re.compile(
    r"\b(?:"
    # "the following", "the given", "the provided", "the above", ... (a pointer at supplied material)
    r"the\s+(?:following|given|provided|attached|above|below|preceding|aforementioned|enclosed|supplied|input)"
    # "the text", "the passage", "the article", ...: a definite reference to material not introduced
    r"|the\s+(?:text|passage|paragraph|excerpt|article|document|snippet)"
    r"|as\s+follows"
    # "this text", "these sentences", "this Python code", "following paragraph"
    r"|(?:this|these|following)\s+(?:[\w-]+\s+)?" + _MATERIAL + r"|"
    # "above" / "below", except before a number ("below 100", "above -5")
    r"(?:above|below)(?!\s*[-+\u2212]?\d)"
    r")\b"
    # an instruction that ends announcing material ("Summarize:") has nothing after it
    r"|:\s*$",
    re.IGNORECASE,
)


def refers_to_unseen_input(instruction: str) -> bool:
    """Whether an instruction points at material that a backward demo would not show.

    The rule (English only; instructions in other languages are never flagged by it) flags:
    "the following" / "as follows"; "the given|provided|attached|above|below|preceding|
    aforementioned|enclosed|supplied|input"; "the text|passage|paragraph|excerpt|article|document|
    snippet"; "this|these|following" + a noun for supplied material (text, passage, sentence,
    article, code, email, list, data, ... with at most one word between, as in "this Python
    code"); the words "above" and "below" (not before a number: "below 100" is a quantity); and
    an instruction that ends with a colon. It errs on the side of skipping: a pair skipped
    wrongly (say "summarize this article: <the article>", the material inline) costs one demo,
    while a pair used wrongly teaches the backward model to write instructions that point at text
    the reader of the final example never sees.
    """
    return _UNSEEN.search(instruction) is not None


def unusable(instruction: str, input: str, output: str) -> str | None:
    """Why a seed pair cannot be a backward demo, or None when it can."""
    if input.strip():
        return HAS_INPUT
    if refers_to_unseen_input(instruction):
        return UNSEEN_INPUT
    if len(output.strip()) < MIN_OUTPUT_CHARS:
        return SHORT_OUTPUT
    if len(instruction) + len(output) > MAX_PAIR_CHARS:
        return OVERSIZED
    return None


class SeedsReport(TypedDict):
    """Where a run's seed pairs came from (None: the built-in seed tasks), how many it used, and
    how many it skipped, per reason."""

    file: str | None
    used: int
    skipped: dict[str, int]


@dataclass
class SeedPairs:
    """The usable (instruction, output) pairs of a seed file (`path` None: the built-in set), and
    the pairs skipped: a count per reason and the first few as "file:LINE: reason"."""

    path: Path | None
    pairs: list[tuple[str, str]] = field(default_factory=list)
    # Every pair with an output, an input folded into its instruction: the self-training loop's
    # training data, which the demo rules above do not cut down (they are about what a demo shows).
    training: list[tuple[str, str]] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)
    skipped: list[str] = field(default_factory=list)

    @property
    def source(self) -> str:
        return str(self.path) if self.path is not None else "built-in"

    def add(self, where: str, instruction: str, input: str, output: str) -> None:
        if output.strip():
            self.training.append((f"{instruction}\n\n{input}" if input.strip() else instruction, output))
        reason = unusable(instruction, input, output)
        if reason is None:
            self.pairs.append((instruction, output))
            return
        self.reasons[reason] += 1
        if len(self.skipped) < 5:
            self.skipped.append(f"{where}: {reason}")

    def digest(self) -> str:
        """A hash of the usable pairs' content (what a run's id depends on; the path does not)."""
        return hashlib.sha256(json.dumps(self.pairs).encode()).hexdigest()

    def training_digest(self) -> str:
        """A hash of the training pairs' content (what the self-training loop's seed run depends on)."""
        return hashlib.sha256(json.dumps(self.training).encode()).hexdigest()

    def report(self) -> SeedsReport:
        """For a run's funnel: where the pairs came from, how many are used, skipped per reason."""
        return {"file": self.source, "used": len(self.pairs), "skipped": dict(self.reasons)}


def load_seed_pairs(path: str | Path | None = None, language: str = "en", training: bool = False) -> SeedPairs:
    """The usable seed pairs of `path` (the built-in seed tasks of `language` when None); skipped pairs are
    counted and logged as a warning. Raises `SeedFileError` naming the file (and line) for a file
    that cannot be read, a malformed entry, or a file with no usable pair (with `training`, for the
    self-training loop, which shows no demos: a file with no pair that has an output)."""
    if path is None:
        out = SeedPairs(None)
        for task in load_seed_tasks(language=language):
            first = task.instances[0] if task.instances else None
            out.add(f"built-in seed {task.id}", task.instruction, *((first.input, first.output) if first else ("", "")))
        return out
    file = Path(path)
    out = SeedPairs(file)
    entries = 0
    for where, item in _entries(file):
        entries += 1
        instruction, input, output = _fields(where, item)
        out.add(where, instruction, input, output)
    if training and out.training:
        return out
    if not out.pairs:
        if entries == 0:
            raise SeedFileError(f"{file}: holds no seed pairs")
        reasons = ", ".join(f"{n} {r}" for r, n in out.reasons.items())
        raise SeedFileError(f"{file}: no usable seed pairs: all {entries} skipped ({reasons}); first: {out.skipped[0]}")
    if out.reasons:
        log.warning(
            "%s: skipped %d of %d seed pairs (%s); first: %s",
            file,
            entries - len(out.pairs),
            entries,
            ", ".join(f"{n} {r}" for r, n in out.reasons.items()),
            "; ".join(out.skipped[:3]),
        )
    return out


def _entries(file: Path) -> Iterator[tuple[str, object]]:
    """("file:LINE" or "file:LINE: item N", parsed value) of each entry of a JSONL file or JSON array."""
    for number, line in utf8_lines(file, SeedFileError):
        if number == 1:
            line = line.removeprefix("\ufeff")
        if not line.strip():
            continue
        if line.lstrip().startswith("["):
            break  # a JSON array: read as a whole below
        yield f"{file}:{number}", json_line(file, number, line, SeedFileError)
    else:
        return
    yield from _array(file)


_SPACE = re.compile(r"[ \t\n\r]*")


def _array(file: Path) -> Iterator[tuple[str, object]]:
    """The items of a file holding one JSON array, each with its line, parsed one at a time."""
    text = read_utf8(file, SeedFileError).removeprefix("\ufeff")
    decoder = json.JSONDecoder()

    def line_of(pos: int) -> int:
        return text.count("\n", 0, pos) + 1

    def bad(pos: int, what: str) -> SeedFileError:
        return SeedFileError(f"{file}:{line_of(pos)}: invalid JSON: {what}")

    pos = _SPACE.match(text, 0).end() + 1  # type: ignore[union-attr]  # past the "["
    pos = _SPACE.match(text, pos).end()  # type: ignore[union-attr]
    number = 0
    if text.startswith("]", pos):
        pos += 1
    else:
        while True:
            number += 1
            try:
                value, end = decoder.raw_decode(text, pos)
            except json.JSONDecodeError as e:
                raise SeedFileError(f"{file}:{e.lineno}: invalid JSON: {e.msg} (column {e.colno})") from None
            where = f"{file}:{line_of(pos)}: item {number}"
            if lone_surrogate(value):
                raise SeedFileError(
                    f"{where}: a JSON string holds an unpaired surrogate escape (such as \\ud800), not text"
                )
            if problem := value_control_problem(value):
                raise SeedFileError(
                    f"{where}: a JSON string holds a {problem}; only text, tabs and line breaks are read"
                )
            yield where, value
            pos = _SPACE.match(text, end).end()  # type: ignore[union-attr]
            if text.startswith(",", pos):
                pos = _SPACE.match(text, pos + 1).end()  # type: ignore[union-attr]
            elif text.startswith("]", pos):
                pos += 1
                break
            else:
                raise bad(pos, f"expected ',' or ']' after item {number}")
    if _SPACE.match(text, pos).end() != len(text):  # type: ignore[union-attr]
        raise bad(pos, "extra data after the array")


def _fields(where: str, item: object) -> tuple[str, str, str]:
    if not isinstance(item, dict):
        raise SeedFileError(f"{where}: expected a JSON object with 'instruction' and 'output'")
    values = []
    for key in ("instruction", "input", "output"):
        value = item.get(key, "" if key == "input" else None)
        if value is None and key == "input":
            value = ""
        if value is None:
            raise SeedFileError(f"{where}: missing field '{key}'")
        if not isinstance(value, str):
            raise SeedFileError(f"{where}: field '{key}' must be a string, not {type(value).__name__}")
        values.append(value)
    if not values[0].strip():
        raise SeedFileError(f"{where}: empty instruction")
    return values[0], values[1], values[2]
