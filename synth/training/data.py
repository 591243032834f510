"""Training examples: read from a dataset directory or a JSONL/Parquet file, hashed, and turned into
(prompt, completion) chats in either direction.

A dataset directory gives its kept records, read through `synth.shards.scan`, which checks every
shard against the manifest (with the system message a record's `messages` open with, if any). A file holds `instruction`, `input` (optional) and `output` fields,
and optionally `system`, a system message for that example (Humpback tags seed and augmented data
with two different ones); a problem names the file and the line (JSONL) or the row (Parquet,
counted from 1). Records of a dataset without an instruction or an output cannot be trained on:
they are counted as skipped. Files and datasets are read by the reader of instruction sources
(`synth.generators.sources`), with the file types and columns `TRAINING_FILES` names.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synth.generators.sources import RowFiles, dataset_rows, file_rows
from synth.schemas.records import Example, to_messages
from synth.training.config import Direction

Chat = list[dict[str, str]]


class TrainingDataError(ValueError):
    """Training data that cannot be used; the message names the file and the line or row."""


@dataclass(frozen=True)
class Examples:
    """The examples of one source, where they came from, and how many records had to be left out."""

    items: list[Example]
    source: str
    skipped: int = 0

    def hash(self) -> str:
        return data_hash(self.items)


def held_out(data: Examples, reference: Examples) -> tuple[Examples, int]:
    """`data` without the examples whose instruction is also a reference prompt (so a reference
    stays held out of training), and how many were removed."""
    prompts = {e.instruction.strip() for e in reference.items}
    kept = [e for e in data.items if e.instruction.strip() not in prompts]
    return Examples(kept, data.source, data.skipped), len(data.items) - len(kept)


def data_hash(examples: Iterable[Example]) -> str:
    """sha256 of the examples in order (each as a JSON array); the same data always hashes the same."""
    digest = hashlib.sha256()
    for e in examples:
        digest.update(json.dumps([e.instruction, e.input, e.output, e.system], ensure_ascii=False).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def to_chat(example: Example, direction: Direction) -> tuple[Chat, Chat]:
    """(prompt, completion) messages. forward: the instruction (and its input after a blank line,
    as `Record.messages` writes it) asks, the output answers. backward (Humpback's backward model,
    p(instruction | output)): the output asks, the instruction (and input) answers. A system message
    leads the prompt when the example has one (else the chat template's default applies)."""
    user, assistant = to_messages(example.instruction, example.input, example.output)
    if direction == "backward":
        user, assistant = assistant, user
    system = [{"role": "system", "content": example.system}] if example.system else []
    return [*system, {"role": "user", "content": user.content}], [{"role": "assistant", "content": assistant.content}]


TRAINING_FILES = RowFiles(
    TrainingDataError,
    unknown="unknown data type; expected a dataset directory, a .jsonl or a .parquet file",
    suffixes=(".parquet", ".jsonl", ".json"),
    json_arrays=False,
    required=("instruction", "output"),
    optional=("input", "system"),
)


def load_examples(source: str | Path) -> Examples:
    """The examples of a dataset directory (its kept records) or of a JSONL or Parquet file."""
    path = Path(source)
    if path.is_dir():
        return _from_dataset(path)
    items = [_file_example(value, where) for where, value in file_rows(path, TRAINING_FILES)]
    if not items:
        raise TrainingDataError(f"{path}: no examples in the file")
    return Examples(items, str(path))


def examples_from(records: Sequence[Any], source: str = "records") -> Examples:
    """Examples from objects in memory: `Example`s, mappings, or objects with `instruction`,
    `input` and `output` attributes (such as `synth.schemas.Record`)."""
    items = []
    for index, record in enumerate(records):
        where = f"{source}: item {index}"
        if isinstance(record, Mapping):
            fields: Mapping[str, Any] = record
        elif hasattr(record, "instruction") and hasattr(record, "output"):
            fields = {name: getattr(record, name, None) for name in ("instruction", "input", "output", "system")}
        else:
            raise TrainingDataError(f"{where}: not a record ({type(record).__name__}); expected instruction and output")
        items.append(_example(fields, where))
    if not items:
        raise TrainingDataError(f"{source}: no examples")
    return Examples(items, source)


def _text(fields: Mapping[str, Any], name: str, where: str, required: bool) -> str:
    value = fields.get(name)
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise TrainingDataError(f"{where}: field {name!r} is {type(value).__name__}, expected text")
    if required and not value.strip():
        raise TrainingDataError(f"{where}: field {name!r} is missing or empty")
    return value


def _example(fields: Mapping[str, Any], where: str) -> Example:
    return Example(
        instruction=_text(fields, "instruction", where, required=True),
        output=_text(fields, "output", where, required=True),
        input=_text(fields, "input", where, required=False),
        system=_text(fields, "system", where, required=False),
    )


def _file_example(value: object, where: str) -> Example:
    if not isinstance(value, Mapping):
        raise TrainingDataError(f"{where}: expected a JSON object with 'instruction' and 'output'")
    return _example(value, where)


def _from_dataset(path: Path) -> Examples:
    items, skipped = [], 0
    for _, row in dataset_rows(path, ("instruction", "input", "output", "messages"), TrainingDataError):
        instruction, output, messages = row["instruction"] or "", row["output"] or "", row["messages"]
        if not instruction.strip() or not output.strip():
            skipped += 1
            continue
        # A record whose conversation opens with a system message (the self-training loop's
        # source tags) is trained with it.
        system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
        items.append(Example(instruction=instruction, output=output, input=row["input"] or "", system=system))
    if not items:
        raise TrainingDataError(f"{path}: the dataset has no kept records with an instruction and an output")
    return Examples(items, str(path), skipped)
