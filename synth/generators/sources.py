"""Instruction sources for generators that rework existing instructions (Evol-Instruct).

A source is a dataset directory written by this project, a JSONL or Parquet file with an
`instruction` column (and optional `input` and `id`), or a seed file. Problems are reported as a
`SourceError` naming the file (and the line, for JSONL: bytes that are not UTF-8, invalid JSON, a
JSON string with an unpaired surrogate escape). JSONL is read one line at a time. Instructions of
any length are returned; the generator rejects those too large to rewrite.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from synth.schemas import content_id
from synth.shards import MANIFEST, scan
from synth.shards.files import json_line, utf8_lines


class SourceError(ValueError):
    """An instruction source that cannot be used; the message names the file."""


@dataclass(frozen=True)
class SourceItem:
    id: str
    instruction: str
    input: str = ""


def load_instructions(source: str | Path) -> list[SourceItem]:
    """Every instruction of `source`, in order, without repeats of the same id."""
    path = Path(source)
    if path.is_dir():
        if not (path / MANIFEST).is_file():
            raise SourceError(f"{path}: a directory without {MANIFEST} is not a dataset")
        frame = scan(path).select("id", "instruction", "input").collect()
        items = [SourceItem(*row) for row in frame.iter_rows()]
    elif path.suffix == ".parquet":
        items = _from_parquet(path)
    elif path.suffix in (".jsonl", ".json", ".txt"):
        items = _from_jsonl(path)
    elif not path.exists():
        raise SourceError(f"{path}: no such file or directory")
    else:
        raise SourceError(f"{path}: unknown source type; expected a dataset directory, .jsonl, .parquet or .txt")
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
    ids = frame["id"].cast(pl.String) if "id" in frame.columns else pl.Series([None] * frame.height, dtype=pl.String)
    items = []
    for instruction, inp, rid in zip(frame["instruction"].fill_null(""), inputs, ids, strict=True):
        items.append(SourceItem(rid or content_id(instruction, inp, ""), instruction, inp))
    return items


def _from_jsonl(path: Path) -> list[SourceItem]:
    items = []
    for number, line in utf8_lines(path, SourceError):
        if not line.strip():
            continue
        if path.suffix == ".txt":
            data: object = {"instruction": line.strip()}
        else:
            data = json_line(path, number, line, SourceError)
        if isinstance(data, str):
            data = {"instruction": data}
        if not isinstance(data, dict) or not isinstance(data.get("instruction"), str):
            raise SourceError(f"{path}:{number}: no 'instruction' text field")
        inp = data.get("input") or ""
        if not isinstance(inp, str):
            raise SourceError(f"{path}:{number}: field 'input' is not text")
        rid = str(data.get("id") or content_id(data["instruction"], inp, ""))
        items.append(SourceItem(rid, data["instruction"], inp))
    return items
