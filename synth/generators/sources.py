"""Instruction sources for generators that rework existing instructions (Evol-Instruct).

A source is a dataset directory written by this project, a JSONL or Parquet file with an
`instruction` column (and optional `input`, `output` and `id`), a `.json` file holding a JSON
array of such objects (the Alpaca release format: instruction, input, output) or JSON Lines, or a
seed file (a release-format task brings its first instance's input and output). Problems are
reported as a `SourceError` naming the file and the line (JSONL: bytes that are not UTF-8,
invalid JSON, a JSON string with an unpaired surrogate escape) or the item's index in the array
(counted from 0). JSONL is read one line at a time. Instructions of any length are returned; the
generator rejects those too large to rewrite.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from synth.schemas import content_id
from synth.shards import MANIFEST, scan
from synth.shards.files import json_line, lone_surrogate, read_utf8, utf8_lines


class SourceError(ValueError):
    """An instruction source that cannot be used; the message names the file."""


@dataclass(frozen=True)
class SourceItem:
    """One source example; `output` is empty when the source has none."""

    id: str
    instruction: str
    input: str = ""
    output: str = ""


def load_instructions(source: str | Path) -> list[SourceItem]:
    """Every instruction of `source`, in order, without repeats of the same id."""
    path = Path(source)
    if path.is_dir():
        if not (path / MANIFEST).is_file():
            raise SourceError(f"{path}: a directory without {MANIFEST} is not a dataset")
        frame = scan(path).select("id", "instruction", "input", "output").collect()
        items = [SourceItem(i, ins, inp or "", out or "") for i, ins, inp, out in frame.iter_rows()]
    elif path.suffix == ".parquet":
        items = _from_parquet(path)
    elif path.suffix == ".json" and _is_json_array(path):
        items = _from_json_array(path)
    elif path.suffix in (".jsonl", ".json", ".txt"):
        items = _from_jsonl(path)
    elif not path.exists():
        raise SourceError(f"{path}: no such file or directory")
    else:
        raise SourceError(f"{path}: unknown source type; expected a dataset directory, .jsonl, .json, .parquet or .txt")
    unique = list({item.id: item for item in items if item.instruction.strip()}.values())
    if not unique:
        raise SourceError(f"{path}: no instructions in the source")
    return unique


def _from_parquet(path: Path) -> list[SourceItem]:
    try:
        frame = pl.read_parquet(path, glob=False)
    except Exception as e:  # polars raises several error types for a file that is not Parquet
        raise SourceError(f"{path}: cannot read as Parquet: {e}") from None
    if "instruction" not in frame.columns:
        raise SourceError(f"{path}: no 'instruction' column (columns: {', '.join(frame.columns)})")
    if frame.schema["instruction"] != pl.String:
        raise SourceError(f"{path}: column 'instruction' is {frame.schema['instruction']}, expected text")
    inputs = (
        frame["input"].cast(pl.String).fill_null("") if "input" in frame.columns else pl.Series([""] * frame.height)
    )
    outputs = (
        frame["output"].cast(pl.String).fill_null("") if "output" in frame.columns else pl.Series([""] * frame.height)
    )
    ids = frame["id"].cast(pl.String) if "id" in frame.columns else pl.Series([None] * frame.height, dtype=pl.String)
    items = []
    for instruction, inp, out, rid in zip(frame["instruction"].fill_null(""), inputs, outputs, ids, strict=True):
        items.append(SourceItem(rid or content_id(instruction, inp, ""), instruction, inp, out))
    return items


def _from_jsonl(path: Path) -> list[SourceItem]:
    items = []
    for number, line in utf8_lines(path, SourceError):
        if not line.strip():
            continue
        if path.suffix == ".txt":
            data: object = line.strip()
        else:
            data = json_line(path, number, line, SourceError)
        items.append(_item(data, f"{path}:{number}"))
    return items


def _is_json_array(path: Path) -> bool:
    """Whether a `.json` file holds one JSON array (else it is read as JSON Lines)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    except OSError:
        return False  # reported by the JSONL reader, which names the file
    return head.startswith(b"[")


def _from_json_array(path: Path) -> list[SourceItem]:
    try:
        data = json.loads(read_utf8(path, SourceError).removeprefix("\ufeff"))
    except json.JSONDecodeError as e:
        raise SourceError(f"{path}:{e.lineno}: invalid JSON: {e.msg} (column {e.colno})") from None
    if not isinstance(data, list):
        raise SourceError(f"{path}: expected a JSON array of objects")
    items = []
    for index, value in enumerate(data):
        where = f"{path}: item {index}"
        if lone_surrogate(value):
            raise SourceError(f"{where}: a JSON string holds an unpaired surrogate escape (such as \\ud800), not text")
        items.append(_item(value, where))
    return items


def _text_field(data: dict, name: str, where: str) -> str:
    value = data.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise SourceError(f"{where}: field {name!r} is not text")
    return value


def _item(data: object, where: str) -> SourceItem:
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
    return SourceItem(rid, data["instruction"], inp, out)
