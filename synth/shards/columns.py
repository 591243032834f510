"""The Parquet column types of kept records and rejects, in the order of the pydantic models.

Stated explicitly so every shard of a dataset has the same schema whatever its rows hold (an
all-empty list column would otherwise be typed differently from one with values). Each block a
registry entry names (a pydantic model of scalar fields, such as `reflection`) adds a struct
column derived from its model, under the block's `column`.
"""

from __future__ import annotations

import functools
import types
import typing
from collections.abc import Sequence
from typing import Literal

import polars as pl
from pydantic import BaseModel

from synth.schemas import Record, Reject
from synth.schemas.records import blocks

_SCALARS: dict[type, pl.DataType] = {str: pl.String(), float: pl.Float64(), int: pl.Int64(), bool: pl.Boolean()}


def _required(annotation: object) -> object:
    """`X` for `X | None`; any other annotation as it is."""
    kinds = [a for a in typing.get_args(annotation) if a is not type(None)]
    return kinds[0] if isinstance(annotation, types.UnionType) and len(kinds) == 1 else annotation


def struct_of(model: type[BaseModel]) -> pl.Struct:
    """The Parquet struct of a record's typed block, derived from its pydantic model (scalar fields,
    each optional or not)."""
    fields: dict[str, pl.DataType] = {}
    for name, info in model.model_fields.items():
        kind = _required(info.annotation)
        if kind not in _SCALARS:
            raise TypeError(f"{model.__name__}.{name}: {info.annotation} has no Parquet type here")
        fields[name] = _SCALARS[kind]
    return pl.Struct(fields)


_MESSAGE = pl.Struct({"role": pl.String, "content": pl.String})
_SAMPLING = pl.Struct(
    {
        "temperature": pl.Float64,
        "top_p": pl.Float64,
        "max_tokens": pl.Int64,
        "presence_penalty": pl.Float64,
        "frequency_penalty": pl.Float64,
        "seed": pl.Int64,
    }
)

_TYPES: dict[str, pl.DataType] = {
    "generator": pl.String(),
    "model": pl.String(),
    "sampling": _SAMPLING,
    "template": pl.String(),
    "template_hash": pl.String(),
    "seed": pl.Int64(),
    "run_id": pl.String(),
    "batch": pl.Int64(),
    "parent_id": pl.String(),
    "root_id": pl.String(),
    "operation": pl.String(),
    "round": pl.Int64(),
    "source_doc": pl.String(),
    "source_id": pl.String(),
    "source_start": pl.Int64(),
    "source_end": pl.Int64(),
    "demos": pl.List(pl.String),
    "id": pl.String(),
    "instruction": pl.String(),
    "input": pl.String(),
    "output": pl.String(),
    "messages": pl.List(_MESSAGE),
    "is_classification": pl.Boolean(),
    "novelty_rouge_l": pl.Float64(),
    "novelty_neighbors": pl.List(pl.String),
    "judge_score": pl.Float64(),
    "judge_rationale": pl.String(),
    "judge_model": pl.String(),
    "judge_rubric": pl.String(),
    "grades": pl.List(pl.Float64),
    "language": pl.String(),
    "ability": pl.String(),
    "tags": pl.List(pl.String),
    "complexity_score": pl.Float64(),
    "quality_score": pl.Float64(),
    "ifd": pl.Float64(),
    "response_tokens": pl.Int64(),
    "selection_method": pl.String(),
    "selection_rank": pl.Int64(),
    "selection_distance": pl.Float64(),
    "created_at": pl.Datetime("us", "UTC"),
    "stage": pl.String(),
    "phase": pl.String(),
    "reason": pl.String(),
    "detail": pl.String(),
    "raw": pl.String(),
}

# What a person looks at first leads; provenance and scores follow in the models' order.
_LEAD = ("id", "stage", "reason", "instruction", "input", "output", "messages")


def _schema(model: type[Record], block_types: tuple[tuple[str, type[BaseModel]], ...]) -> pl.Schema:
    """The columns of `model`'s fields, with each generator's block (a struct derived from its
    model) before `created_at`: adding a generator with a block touches nothing here."""
    names = list(model.model_fields)
    at = names.index("created_at")
    structs = {name: struct_of(block) for name, block in block_types}
    fields = [*names[:at], *structs, *names[at:]]
    ordered = [f for f in _LEAD if f in fields] + [f for f in fields if f not in _LEAD]
    columns = {name: structs[name] if name in structs else _TYPES[name] for name in ordered}
    return pl.Schema(columns)


@functools.cache
def _schemas(block_types: tuple[tuple[str, type[BaseModel]], ...]) -> tuple[pl.Schema, pl.Schema]:
    return _schema(Record, block_types), _schema(Reject, block_types)


def shard_schema(kind: Literal["kept", "rejects"] = "kept") -> pl.Schema:
    """The fixed Parquet schema of kept records or of rejects, with a column for the block of each
    generator in the registry (so a generator registered at run time gets its column)."""
    kept, rejects = _schemas(tuple(blocks().items()))
    return kept if kind == "kept" else rejects


def to_frame(rows: Sequence[Record], schema: pl.Schema) -> pl.DataFrame:
    """Records (or rejects) as a DataFrame with the dataset's fixed schema. A block no registered
    generator declares has no column: an error, not a silent loss."""
    for row in rows:
        if unknown := [name for name in row.__pydantic_extra__ or {} if name not in schema]:
            raise ValueError(
                f"record {row.id}: no column for block {', '.join(unknown)}; "
                "a generator's registry entry names its block (block_path)"
            )
    return pl.DataFrame([r.model_dump() for r in rows], schema=schema)
