"""Instruction sources for generators that rework existing instructions (Evol-Instruct).

A source is a dataset directory written by this project, a JSONL or Parquet file with an
`instruction` column (and optional `input`, `output` and `id`), a `.json` file holding a JSON
array of such objects (the Alpaca release format: instruction, input, output) or JSON Lines, or a
seed file (a release-format task brings its first instance's input and output). Problems are
reported as a `SourceError` naming the file and the line (JSONL: bytes that are not UTF-8,
invalid JSON, a JSON string with an unpaired surrogate escape) or the item's index in the array
(counted from 0). JSONL is read one line at a time. Instructions of any length are returned; the
generator rejects those too large to rewrite.

Training data (`synth.training.data`) is read by the same functions (`dataset_rows`, `file_rows`),
with the file types and columns its own `RowFiles` names.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from synth.schemas import Example, content_id
from synth.shards import MANIFEST, scan
from synth.shards.files import json_line, lone_surrogate, read_utf8, utf8_lines


class SourceError(ValueError):
    """An instruction source that cannot be used; the message names the file."""


@dataclass(frozen=True)
class RowFiles:
    """The files of example rows a reader takes, and how it checks them: instruction sources
    (`INSTRUCTION_FILES`) and training data (`synth.training.data`) are read by the same code."""

    error: type[ValueError]  # raised with a message naming the file (and the line, item or row)
    unknown: str  # what a file of another type is told, after its name
    suffixes: tuple[str, ...]  # the file types taken; ".txt": a line of text is a bare instruction
    json_arrays: bool  # a ".json" file holding a JSON array is read as one (else as JSON Lines)
    required: tuple[str, ...]  # text columns a Parquet file must have
    optional: tuple[str, ...] = ()  # text columns read when present
    cast: tuple[str, ...] = ()  # columns read when present, whatever their type, as text (ids)


INSTRUCTION_FILES = RowFiles(
    SourceError,
    unknown="unknown source type; expected a dataset directory, .jsonl, .json, .parquet or .txt",
    suffixes=(".parquet", ".json", ".jsonl", ".txt"),
    json_arrays=True,
    required=("instruction",),
    cast=("input", "output", "id"),
)


def load_instructions(source: str | Path) -> list[Example]:
    """Every instruction of `source`, in order, without repeats of the same id."""
    path = Path(source)
    rows: Iterator[tuple[str, object]]
    if path.is_dir():
        rows = dataset_rows(path, ("id", "instruction", "input", "output"), SourceError)
    else:
        rows = file_rows(path, INSTRUCTION_FILES)
    items = [_item(value, where) for where, value in rows]
    unique = list({item.id: item for item in items if item.instruction.strip()}.values())
    if not unique:
        raise SourceError(f"{path}: no instructions in the source")
    return unique


def dataset_rows(path: Path, columns: Sequence[str], error: type[ValueError]) -> Iterator[tuple[str, dict]]:
    """("DATASET: record N", row) of each kept record of a dataset directory (N from 1), with `columns`."""
    if not (path / MANIFEST).is_file():
        raise error(f"{path}: a directory without {MANIFEST} is not a dataset")
    frame = scan(path).select(*columns).collect()
    return ((f"{path}: record {n}", row) for n, row in enumerate(frame.iter_rows(named=True), start=1))


def file_rows(path: Path, files: RowFiles) -> Iterator[tuple[str, object]]:
    """(where, value) of each example of a file, in order: a parsed JSON value ("file:LINE", or
    "file: item N" of a JSON array, from 0), a Parquet row as a dict of text ("file: row N", from 1,
    nulls read as empty), or a line of a .txt file. Problems raise `files.error`, naming the file."""
    if not path.exists():
        raise files.error(f"{path}: no such file or directory")
    if path.suffix not in files.suffixes:
        raise files.error(f"{path}: {files.unknown}")
    if path.suffix == ".parquet":
        return _parquet_rows(path, files)
    if path.suffix == ".json" and files.json_arrays and _is_json_array(path):
        return _json_array_rows(path, files.error)
    return _line_rows(path, files.error)


def _parquet_rows(path: Path, files: RowFiles) -> Iterator[tuple[str, dict]]:
    try:
        frame = pl.read_parquet(path, glob=False)
    except Exception as e:  # polars raises several error types for a file that is not Parquet
        raise files.error(f"{path}: cannot read as Parquet: {e}") from None
    for column in files.required:
        if column not in frame.columns:
            raise files.error(f"{path}: no {column!r} column (columns: {', '.join(frame.columns)})")
    text = [c for c in (*files.required, *files.optional) if c in frame.columns]
    for column in text:
        if frame.schema[column] != pl.String:
            raise files.error(f"{path}: column {column!r} is {frame.schema[column]}, expected text")
    cast = [c for c in files.cast if c in frame.columns]
    rows = frame.select(*text, *(pl.col(c).cast(pl.String) for c in cast)).fill_null("")
    return ((f"{path}: row {n}", row) for n, row in enumerate(rows.iter_rows(named=True), start=1))


def _line_rows(path: Path, error: type[ValueError]) -> Iterator[tuple[str, object]]:
    for number, line in utf8_lines(path, error):
        if not line.strip():
            continue
        if path.suffix == ".txt":
            yield f"{path}:{number}", line.strip()
        else:
            yield f"{path}:{number}", json_line(path, number, line, error)


def _is_json_array(path: Path) -> bool:
    """Whether a `.json` file holds one JSON array (else it is read as JSON Lines)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    except OSError:
        return False  # reported by the JSONL reader, which names the file
    return head.startswith(b"[")


def _json_array_rows(path: Path, error: type[ValueError]) -> Iterator[tuple[str, object]]:
    try:
        data = json.loads(read_utf8(path, error).removeprefix("\ufeff"))
    except json.JSONDecodeError as e:
        raise error(f"{path}:{e.lineno}: invalid JSON: {e.msg} (column {e.colno})") from None
    if not isinstance(data, list):
        raise error(f"{path}: expected a JSON array of objects")
    for index, value in enumerate(data):
        where = f"{path}: item {index}"
        if lone_surrogate(value):
            raise error(f"{where}: a JSON string holds an unpaired surrogate escape (such as \\ud800), not text")
        yield where, value


def _text_field(data: dict, name: str, where: str) -> str:
    value = data.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise SourceError(f"{where}: field {name!r} is not text")
    return value


def _item(data: object, where: str) -> Example:
    """One source example from a parsed JSON value (an object or a bare instruction string)."""
    if isinstance(data, str):
        data = {"instruction": data}
    if not isinstance(data, dict) or not isinstance(data.get("instruction"), str):
        raise SourceError(f"{where}: no 'instruction' text field")
    inp = _text_field(data, "input", where)
    out = _text_field(data, "output", where)
    instances = data.get("instances")
    # A Self-Instruct release-format task: its first instance is the example's input and output.
    if not inp and not out and isinstance(instances, list) and instances and isinstance(instances[0], dict):
        inp = _text_field(instances[0], "input", f"{where}: instances[0]")
        out = _text_field(instances[0], "output", f"{where}: instances[0]")
    rid = str(data.get("id") or content_id(data["instruction"], inp, ""))
    return Example(data["instruction"], out, inp, id=rid)
