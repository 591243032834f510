"""A user's file of records to curate (`synth curate FILE`), checked whole before anything is
written and then read one batch at a time, so memory holds a batch whatever the file's size.

A JSONL file holds one object per line with `instruction`, `output`, optional `input` and `id`;
a Parquet file the same columns. A problem is a `CurationInputError` naming the file and the line
(JSONL) or row (Parquet). Each record keeps the file's own `id` (if any) as `source_id` and its
place as `source_doc` ("FILE:LINE", or "FILE:ROW" for Parquet); its `id` is the content id every
record has.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from synth.schemas import Record
from synth.shards.files import json_line, utf8_lines_from
from synth.text import control_problem


class CurationInputError(ValueError):
    """Records that cannot be curated as given; the message names the file and line."""


Row = tuple[str, str, str, str | None, int]  # instruction, input, output, the file's id, line or row


@dataclass
class RecordsFile:
    """A checked file of records: `count` of them, in batches of `batch_size` read on demand
    (`batch(k)`); for JSONL, where each batch starts (its byte offset and line number)."""

    path: Path
    batch_size: int
    count: int = 0
    starts: list[tuple[int, int]] = field(default_factory=list)

    @classmethod
    def open(cls, path: str | Path, batch_size: int = 10_000) -> RecordsFile:
        """Check every record of the file (one pass, holding none of them) and index its batches."""
        file = cls(Path(path), batch_size)
        if file.path.suffix == ".jsonl":
            for n, (offset, number, _) in enumerate(file._jsonl_rows()):
                if n % batch_size == 0:
                    file.starts.append((offset, number))
                file.count += 1
        elif file.path.suffix == ".parquet":
            file.count = sum(1 for _ in file._parquet_rows(0, None))
        else:
            raise CurationInputError(
                f"{file.path}: expected a .jsonl or .parquet file of records, or a dataset directory"
            )
        if not file.count:
            raise CurationInputError(f"{file.path}: no records")
        return file

    @property
    def batches(self) -> int:
        return -(-self.count // self.batch_size)

    def batch(self, k: int) -> list[Record]:
        """The records of batch `k` (rows k * batch_size onward), as `Record`s."""
        if self.path.suffix == ".jsonl":
            offset, number = self.starts[k]
            rows: Iterator[Row] = (row for _, _, row in self._jsonl_rows(offset, number))
        else:
            rows = self._parquet_rows(k * self.batch_size, self.batch_size)
        out = []
        for instruction, input, output, sid, where in rows:
            out.append(
                Record(
                    generator="import",
                    instruction=instruction,
                    input=input,
                    output=output,
                    source_id=sid,
                    source_doc=f"{self.path.name}:{where}",
                    tags=["imported"],
                )
            )
            if len(out) == self.batch_size:
                break
        return out

    def records(self) -> list[Record]:
        """Every record of the file (for small files and tests)."""
        return [r for k in range(self.batches) for r in self.batch(k)]

    # -- reading -----------------------------------------------------------------------------------

    def _jsonl_rows(self, offset: int = 0, first: int = 1) -> Iterator[tuple[int, int, Row]]:
        """(byte offset, line number, row) of each non-blank line from `offset` (line `first`)."""
        file = self.path
        for number, start, line in utf8_lines_from(file, CurationInputError, offset, first):
            if not line.strip():
                continue
            data = json_line(file, number, line, CurationInputError)
            if not isinstance(data, dict):
                raise CurationInputError(f"{file}:{number}: expected a JSON object")
            yield start, number, _jsonl_row(file, number, data)

    def _parquet_rows(self, offset: int, limit: int | None) -> Iterator[Row]:
        file = self.path
        try:
            parquet = pq.ParquetFile(file)
        except Exception as e:  # not Parquet, or damaged
            raise CurationInputError(f"{file}: not a readable Parquet file ({e})") from None
        schema = parquet.schema_arrow
        for column in ("instruction", "output"):
            if column not in schema.names:
                raise CurationInputError(f"{file}: no '{column}' column (columns: {', '.join(schema.names)})")
        for column in ("instruction", "output"):
            if column in schema.names and str(schema.field(column).type) not in ("string", "large_string"):
                raise CurationInputError(f"{file}: column '{column}' is {schema.field(column).type}, expected text")
        columns = [c for c in ("instruction", "input", "output", "id") if c in schema.names]
        number = 0
        for part in parquet.iter_batches(batch_size=8192, columns=columns):
            data: dict[str, list[Any]] = part.to_pydict()
            for i in range(part.num_rows):
                number += 1
                if number <= offset:
                    continue
                if limit is not None and number > offset + limit:
                    return
                yield _parquet_row(file, number, {c: data[c][i] for c in columns})


def _jsonl_row(file: Path, number: int, data: dict) -> Row:
    for key in ("instruction", "output"):
        if not isinstance(data.get(key), str):
            raise CurationInputError(f"{file}:{number}: field '{key}' is missing or not text")
    if not isinstance(data.get("input", ""), str):
        raise CurationInputError(f"{file}:{number}: field 'input' is not text")
    sid = data.get("id")
    if (sid is not None and not isinstance(sid, str | int)) or isinstance(sid, bool):
        raise CurationInputError(f"{file}:{number}: field 'id' is not text or a number")
    return data["instruction"], data.get("input", ""), data["output"], None if sid is None else str(sid), number


def _parquet_row(file: Path, number: int, row: dict[str, Any]) -> Row:
    instruction, output = row["instruction"], row["output"]
    input = "" if row.get("input") is None else str(row["input"])
    if instruction is None or output is None:
        raise CurationInputError(f"{file}: row {number}: empty 'instruction' or 'output'")
    for column, value in (("instruction", instruction), ("input", input), ("output", output)):
        if problem := control_problem(value):
            raise CurationInputError(
                f"{file}: row {number}: column '{column}' holds a {problem}; only text, tabs and line breaks are read"
            )
    sid = row.get("id")
    return instruction, input, output, None if sid is None else str(sid), number
