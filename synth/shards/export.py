"""Export kept records into the JSONL shapes training tools read.

- `jsonl`: every column of the record (provenance included).
- `alpaca`: `id`, `instruction`, `input`, `output`.
- `sharegpt`: `id`, `conversations` of `{"from": "human"|"gpt", "value": ...}`.
- `messages`: `id`, `messages` of `{"role", "content"}` (TRL, `datasets` chat format).
- `dpo`: `id`, `prompt`, `chosen`, `rejected` for TRL's DPO trainer, in its conversational form:
  `prompt` is the conversation up to the answer (system and user turns), `chosen` and `rejected`
  one assistant turn each. Only records that hold a preference pair (`synth generate preferences`).

Every format keeps the record's `id`, so a trained model's data can be traced back to the dataset
(and through it to the run, prompt and model that made each record); training tools ignore it.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Literal

import polars as pl

from synth.shards.atomic import atomic_write_bytes
from synth.shards.read import scan

ExportFormat = Literal["jsonl", "alpaca", "sharegpt", "messages", "dpo"]
FORMATS: tuple[str, ...] = ("jsonl", "alpaca", "sharegpt", "messages", "dpo")


def _assistant(side: str) -> pl.Expr:
    """One assistant turn holding the pair's `side`, as a list of one `{"role", "content"}` struct."""
    turn = pl.struct(pl.lit("assistant").alias("role"), _pair(side).alias("content"))
    return pl.concat_list(turn).alias(side)


def _pair(side: str) -> pl.Expr:
    return pl.col("preferences").struct.field(side)


def export_frame(path: str | Path, fmt: ExportFormat) -> pl.DataFrame:
    """The kept records of a dataset in the shape of `fmt`."""
    kept = scan(path, "kept")
    if fmt == "jsonl":
        return kept.with_columns(pl.col("created_at").dt.to_string("%Y-%m-%dT%H:%M:%S%.fZ")).collect()
    if fmt == "alpaca":
        return kept.select("id", "instruction", "input", "output").collect()
    if fmt == "messages":
        return kept.select("id", "messages").collect()
    if fmt == "dpo":
        prompt = pl.col("messages").list.head(pl.col("messages").list.len() - 1).alias("prompt")
        pairs = kept.filter(_pair("chosen").is_not_null() & _pair("rejected").is_not_null())
        return pairs.select("id", prompt, _assistant("chosen"), _assistant("rejected")).collect()
    if fmt == "sharegpt":
        turn = pl.struct(
            pl.element()
            .struct.field("role")
            .replace_strict({"user": "human", "assistant": "gpt", "system": "system"})
            .alias("from"),
            pl.element().struct.field("content").alias("value"),
        )
        return kept.select("id", pl.col("messages").list.eval(turn).alias("conversations")).collect()
    raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")


def export(path: str | Path, fmt: ExportFormat, out: str | Path) -> int:
    """Write the kept records of `path` as JSON lines in `fmt` to `out` (atomically); returns rows written."""
    frame = export_frame(path, fmt)
    buffer = io.BytesIO()
    frame.write_ndjson(buffer)
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(target, buffer.getvalue())
    return frame.height
