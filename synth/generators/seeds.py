"""Reading seed tasks: the Self-Instruct release format, or plain JSONL/text of instructions.

Every problem is reported as a `SeedFileError` naming the file and line, never a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import ValidationError

from synth.schemas import SeedTask
from synth.shards.files import read_utf8

DEFAULT_SEEDS = Path(__file__).parent / "seeds" / "default_seed_tasks.jsonl"


class SeedFileError(ValueError):
    """A seed file that cannot be used; the message names the file and line."""


def load_seed_tasks(path: str | Path | None = None) -> list[SeedTask]:
    """Seed tasks from `path` (the built-in set when None).

    Accepted per JSONL line: a release-format task (`instruction`, optional `id`, `name`,
    `instances`, `is_classification`), an object with just `instruction`, or a JSON string.
    A `.txt` file holds one instruction per non-empty line.
    """
    file = Path(path) if path is not None else DEFAULT_SEEDS
    text = read_utf8(file, SeedFileError)
    tasks: list[SeedTask] = []
    seen: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        task = _parse_line(file, number, line, plain=file.suffix == ".txt")
        if not task.id:
            task.id = f"seed_{number}"
        if task.id in seen:
            raise SeedFileError(f"{file}:{number}: duplicate task id {task.id!r}")
        seen.add(task.id)
        tasks.append(task)
    if not tasks:
        raise SeedFileError(f"{file}: no seed tasks (the file is empty)")
    return tasks


def _parse_line(file: Path, number: int, line: str, plain: bool) -> SeedTask:
    if plain:
        return SeedTask(id="", instruction=line.strip())
    try:
        data = json.loads(line)
    except json.JSONDecodeError as e:
        raise SeedFileError(f"{file}:{number}: invalid JSON: {e.msg} (column {e.colno})") from None
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
