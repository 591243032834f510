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

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import polars as pl

from synth.schemas import Example, content_id
from synth.shards import MANIFEST, scan
from synth.shards.files import json_line, lone_surrogate, read_utf8, utf8_lines
from synth.shards.layout import is_dataset
from synth.text import control_problem, value_control_problem

log = logging.getLogger(__name__)


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


def items_digest(items: Sequence[Example], outputs: bool = True) -> str:
    """A hash of source items' content (ids, instructions, inputs and, with `outputs`, outputs),
    for a run id: the same items give the same run whatever file they were read from."""
    rows = ("\x1f".join([i.id, i.instruction, i.input, *([i.output] if outputs else [])]) for i in items)
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


def load_instructions(source: str | Path) -> list[Example]:
    """Every instruction of `source`, in order, each under an id of its own.

    Two examples that give the same `id` are refused, naming both places: one would silently
    replace the other. An example without an id takes its content id (instruction and input); a
    repeat of one gets that id with "-2", "-3"... after it, so both are kept (the curation chain
    rejects an exact duplicate with its reason). An example with an empty instruction is skipped
    with a warning; a source with no instruction at all is an error saying what it holds.
    """
    path = Path(source)
    rows: Iterator[tuple[str, object]]
    if path.is_dir():
        rows = dataset_rows(path, ("id", "instruction", "input", "output"), SourceError)
    else:
        rows = file_rows(path, INSTRUCTION_FILES)
    items: list[Example] = []
    given: dict[str, str] = {}  # an id the source gives -> where it first came
    derived: Counter[str] = Counter()
    empty: list[str] = []
    for where, value in rows:
        item, own_id = _item(value, where)
        if not item.instruction.strip():
            empty.append(where)
            continue
        if own_id:
            if item.id in given:
                raise SourceError(f"{where}: id {item.id!r} is already the id of {given[item.id]}; ids must be unique")
            given[item.id] = where
        else:
            derived[item.id] += 1
            if derived[item.id] > 1:
                item = replace(item, id=f"{item.id}-{derived[item.id]}")
        items.append(item)
    taken = Counter(i.id for i in items)
    if len(taken) != len(items):  # an id the source gives is also a repeat's ("abc-2"): rare, but refused
        clash = next(rid for rid, n in taken.items() if n > 1)
        raise SourceError(f"{path}: id {clash!r} is given to an example and taken by a repeated one; rename it")
    if not items:
        found = "no examples" if not empty else f"{len(empty)} example(s), none with an instruction (first: {empty[0]})"
        raise SourceError(f"{path}: no instructions in the source: {found}")
    if empty:
        log.warning("%s: skipped %d example(s) with an empty instruction; first: %s", path, len(empty), empty[0])
    return items


def dataset_rows(path: Path, columns: Sequence[str], error: type[ValueError]) -> Iterator[tuple[str, dict]]:
    """("DATASET: record N", row) of each kept record of a dataset directory (N from 1), with `columns`."""
    if not is_dataset(path):
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
    numbered = ((f"{path}: row {n}", row) for n, row in enumerate(rows.iter_rows(named=True), start=1))
    return _checked(numbered, files.error)


def _checked(rows: Iterator[tuple[str, dict]], error: type[ValueError]) -> Iterator[tuple[str, dict]]:
    """`rows` (Parquet rows), each refused as "file: row N: column 'c' holds a control character"
    when a text value holds one: they would reach a prompt unseen."""
    for where, row in rows:
        for column, value in row.items():
            if isinstance(value, str) and (problem := control_problem(value)):
                raise error(f"{where}: column {column!r} holds a {problem}; only text, tabs and line breaks are read")
        yield where, row


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
        if problem := value_control_problem(value):
            raise error(f"{where}: a JSON string holds a {problem}; only text, tabs and line breaks are read")
        yield where, value


def _text_field(data: dict, name: str, where: str) -> str:
    value = data.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise SourceError(f"{where}: field {name!r} is not text")
    return value


def _item(data: object, where: str) -> tuple[Example, bool]:
    """One source example from a parsed JSON value (an object or a bare instruction string), and
    whether the id is the source's own (else it is the content id)."""
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
    own = data.get("id")
    rid = str(own or content_id(data["instruction"], inp, ""))
    return Example(data["instruction"], out, inp, id=rid), bool(own)
