"""Reading seed tasks: the Self-Instruct release format, or plain JSONL/text of instructions.

Every problem is reported as a `SeedFileError` naming the file and line, never a traceback:
bytes that are not UTF-8, invalid JSON, JSON strings holding an unpaired surrogate escape
("\\ud800", which Python accepts but no writer can store), and control characters (a NUL, an
escape sequence; `synth.text`) alike. A byte-order mark that opens the file is dropped.

A seed task larger than `MAX_SEED_CHARS` characters (instruction and instances together) is too
large to show a model as an in-context example: it is skipped, counted and reported (a warning,
and `SeedFile.skipped`), never copied into prompts or records. The file is read one line at a
time, so a huge file or line is never held in several copies.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from synth.schemas import SeedTask
from synth.shards.files import json_line, utf8_lines

DEFAULT_SEEDS = Path(__file__).parent / "seeds" / "default_seed_tasks.jsonl"


def default_seeds(language: str = "en") -> Path:
    """The built-in seed tasks of `language` (English: `DEFAULT_SEEDS`; others `LANG_seed_tasks.jsonl`)."""
    if language == "en":
        return DEFAULT_SEEDS
    path = DEFAULT_SEEDS.with_name(f"{language}_seed_tasks.jsonl")
    if not path.is_file():
        built_in = sorted(p.name.split("_")[0] for p in DEFAULT_SEEDS.parent.glob("*_seed_tasks.jsonl"))
        raise SeedFileError(
            f"no built-in seed tasks for language {language!r} (there are: en, {', '.join(built_in)}); "
            "pass a seed file of your own"
        )
    return path


# More than a small model's context holds (about 4 characters a token); generous on purpose.
MAX_SEED_CHARS = 20_000
# A JSONL line this long cannot hold a seed under the limit (escapes take up to 6 characters
# per character of text), so it is skipped without being parsed.
_MAX_LINE_CHARS = 8 * MAX_SEED_CHARS
OVERSIZED = f"larger than {MAX_SEED_CHARS} characters"

log = logging.getLogger(__name__)


class SeedFileError(ValueError):
    """A seed file that cannot be used; the message names the file and line."""


def seed_chars(task: SeedTask) -> int:
    """Characters of a seed task's text: its instruction and every instance's input and output."""
    return len(task.instruction) + sum(len(i.input) + len(i.output) for i in task.instances)


@dataclass
class SeedFile:
    """The usable tasks of a seed file, and the ones skipped as "file:LINE: reason"."""

    path: Path
    tasks: list[SeedTask] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)

    def skip(self, number: int, reason: str, detail: str) -> None:
        self.skipped.append(f"{self.path}:{number}: {reason} ({detail}); skipped")
        self.reasons[reason] += 1


def read_seed_file(path: str | Path | None = None, language: str = "en") -> SeedFile:
    """Seed tasks from `path` (the built-in set of `language` when None), with those skipped as too large.

    Accepted per JSONL line: a release-format task (`instruction`, optional `id`, `name`,
    `instances`, `is_classification`), an object with just `instruction`, or a JSON string.
    A `.txt` file holds one instruction per non-empty line. A task without an id is `seed_LINE`.
    """
    file = Path(path) if path is not None else default_seeds(language)
    out = SeedFile(file)
    seen: set[str] = set()
    plain = file.suffix == ".txt"
    lines = 0
    for number, line in utf8_lines(file, SeedFileError):
        lines = number
        if not line.strip():
            continue
        if len(line) > (MAX_SEED_CHARS if plain else _MAX_LINE_CHARS):
            out.skip(number, OVERSIZED, f"a line of {len(line)} characters")
            continue
        task = _parse_line(file, number, line, plain=plain)
        if (size := seed_chars(task)) > MAX_SEED_CHARS:
            out.skip(number, OVERSIZED, f"{size} characters")
            continue
        if not task.id:
            task.id = f"seed_{number}"
        if task.id in seen:
            raise SeedFileError(f"{file}:{number}: duplicate task id {task.id!r}")
        seen.add(task.id)
        out.tasks.append(task)
    if not out.tasks:
        if out.skipped:
            reasons = ", ".join(f"{n} {r}" for r, n in out.reasons.items())
            raise SeedFileError(
                f"{file}: no usable seed tasks; {len(out.skipped)} skipped ({reasons}), first: {out.skipped[0]}"
            )
        found = "the file is empty" + (f": {lines} blank line{'s' if lines > 1 else ''}" if lines else "")
        raise SeedFileError(f"{file}: no seed tasks ({found})")
    return out


def load_seed_tasks(path: str | Path | None = None, language: str = "en") -> list[SeedTask]:
    """The usable seed tasks of `path` (see `read_seed_file`; the built-in ones of `language` when
    None); skipped ones are logged as a warning with their count, reason and first lines."""
    seeds = read_seed_file(path, language)
    if seeds.skipped:
        log.warning(
            "%s: skipped %d seed task(s) %s; first: %s",
            seeds.path,
            len(seeds.skipped),
            ", ".join(f"{n} {r}" for r, n in seeds.reasons.items()),
            "; ".join(seeds.skipped[:3]),
        )
    return seeds.tasks


def _parse_line(file: Path, number: int, line: str, plain: bool) -> SeedTask:
    if plain:
        return SeedTask(id="", instruction=line.strip())
    data = json_line(file, number, line, SeedFileError)
    if isinstance(data, str):
        data = {"instruction": data}
    if not isinstance(data, dict):
        raise SeedFileError(f"{file}:{number}: expected a JSON object with an 'instruction'")
    if "instruction" not in data:
        raise SeedFileError(f"{file}:{number}: missing field 'instruction'")
    data.setdefault("id", "")
    try:
        task = SeedTask.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"])
        raise SeedFileError(f"{file}:{number}: field '{where}': {err['msg']}") from None
    if not task.instruction.strip():
        raise SeedFileError(f"{file}:{number}: empty instruction")
    return task
