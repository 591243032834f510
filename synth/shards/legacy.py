"""Reading shards written before a generator's own fields moved into its typed block.

Such a shard holds the fields as flat columns (a preference pair's `chosen`, `rejected`...; code's
`tests`, `execution`), which the block's `legacy` names. Reading it gathers them into the block's
struct column, null where the record held none of them, so a dataset written before the move reads
as one written after it, with nothing lost. A shard the manifest lists with the blocks' layout
(`ShardInfo.layout`, set by every writer since) is read as it is; for any other (listed before the
field existed, or again by `verify --repair`) its own Parquet footer tells (read once per file
state).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Collection, Sequence

import polars as pl
import pyarrow.parquet as pq

from synth.schemas import ShardInfo
from synth.schemas.manifest import BLOCKS_LAYOUT
from synth.schemas.records import blocks
from synth.shards.columns import struct_of


@functools.lru_cache(maxsize=4096)  # bounded: a process may read datasets of any number of shards
def _footer_columns(path: str, size: int, mtime: int) -> frozenset[str]:
    # pyarrow reads the footer alone, and takes the path as a path (polars would read it as a glob)
    return frozenset(pq.read_schema(path).names)


def file_columns(path: str | os.PathLike[str]) -> frozenset[str]:
    """The columns a Parquet file holds (from its footer; remembered while the file is unchanged)."""
    stat = os.stat(path)
    return _footer_columns(os.fspath(path), stat.st_size, stat.st_mtime_ns)


def gathered(frame: pl.LazyFrame, columns: Collection[str]) -> pl.LazyFrame:
    """`frame` (of a shard holding `columns`) with each block's flat legacy columns gathered into
    the block's column, and the flat ones dropped; as it is where it holds none."""
    made, flat_names = [], set()
    for block in blocks().values():
        flat = [name for name in block.legacy if name in columns]
        if not flat or block.column in columns:
            continue
        struct = struct_of(block)
        fields = [
            (pl.col(f.name) if f.name in flat else pl.lit(None)).cast(f.dtype).alias(f.name) for f in struct.fields
        ]
        held = pl.any_horizontal(*(pl.col(name).is_not_null() for name in flat))
        made.append(pl.when(held).then(pl.struct(fields)).otherwise(pl.lit(None, struct)).alias(block.column))
        flat_names.update(flat)
    return frame.with_columns(made).drop(flat_names) if made else frame


def needs_gathering(columns: Collection[str]) -> bool:
    return any(
        block.column not in columns and any(name in columns for name in block.legacy) for block in blocks().values()
    )


def flat_columns(path: str | os.PathLike[str], shard: ShardInfo) -> frozenset[str] | None:
    """The columns of a shard whose blocks' fields lie flat (to gather), or None where it has none."""
    if shard.layout >= BLOCKS_LAYOUT:
        return None
    columns = file_columns(path)
    return columns if needs_gathering(columns) else None


def shards_frame(files: Sequence[tuple[str, ShardInfo]], schema: pl.Schema) -> pl.LazyFrame:
    """One LazyFrame over the shards at `files` (path, manifest entry) with `schema`: a column a
    shard lacks reads as null, one the schema does not know is left out, and a shard from before a
    block's move has its fields gathered."""
    if not files:
        return pl.LazyFrame(schema=schema)
    parts: list[pl.LazyFrame] = []
    current: list[str] = []
    for file, shard in files:
        if (columns := flat_columns(file, shard)) is None:
            current.append(file)
            continue
        if current:
            parts.append(_scan(current, schema))
            current = []
        frame = gathered(pl.scan_parquet(file, glob=False), columns)
        have = frame.collect_schema()
        parts.append(
            frame.select(
                pl.col(name).cast(dtype) if name in have else pl.lit(None, dtype).alias(name)
                for name, dtype in schema.items()
            )
        )
    if current:
        parts.append(_scan(current, schema))
    return parts[0] if len(parts) == 1 else pl.concat(parts, how="vertical")


def _scan(files: list[str], schema: pl.Schema) -> pl.LazyFrame:
    return pl.scan_parquet(files, schema=schema, glob=False, missing_columns="insert", extra_columns="ignore")
