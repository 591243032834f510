"""Scores and embeddings computed once and kept: one folder per scorer (its name and key), one
Parquet part per finished batch.

A part is its batch's completion marker, written whole or not at all: a killed run loses at most
the batch in flight, and the next run scores only the records no part holds. A scorer with other
settings (model, prompt, parameters) has another key, so another folder: nothing stale is reused.
By default the folders live in the scored dataset's `index/selection/`, beside its other derived
state.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from synth.selection.scorers import Failure, Item, ScoreBatch, Scorer, scorer_key
from synth.shards.atomic import atomic_write_bytes

FAILURE_COLUMNS: dict[str, pl.DataType] = {"failure": pl.String(), "detail": pl.String(), "raw": pl.String()}
Say = Callable[[str], None]


def default_root(dataset: str | Path) -> Path:
    return Path(dataset) / "index" / "selection"


class ScoreStore:
    """The stored values of one scorer: rows of `id`, its columns, and `failure` (with `detail` and
    `raw`) for items it could not score."""

    def __init__(self, root: str | Path, name: str, key: str, describe: dict[str, Any] | None = None) -> None:
        self.folder = Path(root) / f"{name}-{key}"
        self.describe = describe or {}

    def parts(self) -> list[Path]:
        return sorted(self.folder.glob("part-*.parquet")) if self.folder.is_dir() else []

    def load(self) -> pl.DataFrame | None:
        """Every stored row (the first one of an id wins), or None when nothing is stored yet."""
        parts = self.parts()
        if not parts:
            return None
        frame = pl.concat([pl.read_parquet(p) for p in parts], how="vertical_relaxed")
        return frame.unique("id", keep="first", maintain_order=True)

    def add(self, frame: pl.DataFrame) -> None:
        """Store a finished batch's rows as one part (named by its ids, so a batch stored twice is
        one file)."""
        if frame.is_empty():
            return
        if not self.folder.is_dir():
            self.folder.mkdir(parents=True, exist_ok=True)
            if self.describe:
                about = json.dumps(self.describe, indent=2, sort_keys=True, default=str).encode()
                atomic_write_bytes(self.folder / "scorer.json", about)
        digest = hashlib.sha256("\x1f".join(frame["id"].to_list()).encode()).hexdigest()[:16]
        buffer = io.BytesIO()
        frame.write_parquet(buffer, compression="zstd")
        atomic_write_bytes(self.folder / f"part-{digest}.parquet", buffer.getvalue())


def batch_frame(items: Sequence[Item], batch: ScoreBatch, columns: dict[str, pl.DataType]) -> pl.DataFrame:
    """A batch's values and final failures as rows to store (engine errors are left out: they are
    tried again)."""
    rows: list[dict[str, Any]] = []
    for item in items:
        if item.id in batch.values:
            rows.append({"id": item.id, **batch.values[item.id]})
        elif (failure := batch.failures.get(item.id)) is not None and failure.final:
            rows.append({"id": item.id, "failure": failure.reason, "detail": failure.detail, "raw": failure.raw})
    schema = {"id": pl.String(), **columns, **FAILURE_COLUMNS}
    return pl.DataFrame(rows, schema=schema)


def items_of(frame: pl.DataFrame) -> list[Item]:
    return [Item(*row) for row in frame.select("id", "instruction", "input", "output").iter_rows()]


def ensure_scores(
    items: pl.DataFrame,
    scorer: Scorer,
    root: str | Path,
    batch_size: int = 256,
    say: Say | None = None,
) -> tuple[pl.DataFrame, dict[str, Failure]]:
    """Every item's values of `scorer`, scoring only those its store lacks, one stored part per
    batch. `items` has id, instruction, input, output. Returns the stored rows of these items (id,
    the scorer's columns, failure, detail, raw) and the failures of this run that were not stored
    (engine errors)."""
    store = ScoreStore(root, scorer.name, scorer_key(scorer), {"name": scorer.name, **scorer.describe()})
    stored = store.load()
    done = set() if stored is None else set(stored["id"].to_list())
    todo = items.filter(~pl.col("id").is_in(list(done))) if done else items
    transient: dict[str, Failure] = {}
    if todo.height and say is not None:
        say(f"{scorer.name}: scoring {todo.height:,} records ({len(done):,} already stored in {store.folder})")
    for n, part in enumerate(todo.iter_slices(batch_size)):
        batch_items = items_of(part)
        batch = scorer.score(batch_items)
        store.add(batch_frame(batch_items, batch, scorer.columns))
        transient.update({k: f for k, f in batch.failures.items() if not f.final})
        if say is not None and (n + 1) % 10 == 0:
            say(f"{scorer.name}: {min((n + 1) * batch_size, todo.height):,}/{todo.height:,} scored")
    rows = store.load()
    schema = {"id": pl.String(), **scorer.columns, **FAILURE_COLUMNS}
    if rows is None:
        rows = pl.DataFrame(schema=schema)
    return rows.filter(pl.col("id").is_in(items["id"].implode())).select(list(schema)), transient
