"""The datasets a viewer serves, read afresh on every request: the manifest, and which of its shards
check out (present, size, checksum). Queries read only those; the damaged ones are named.

Nothing here writes to a dataset: no lock is taken and nothing is repaired.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import polars as pl

from synth.schemas import Manifest, ShardInfo
from synth.shards.columns import shard_schema
from synth.shards.layout import MANIFEST, DatasetError, is_dataset, read_manifest
from synth.shards.legacy import shards_frame
from synth.shards.read import shard_path, shard_problem

Kind = Literal["kept", "rejects"]
KINDS: tuple[Kind, ...] = ("kept", "rejects")
T = TypeVar("T")


@dataclass(frozen=True)
class DamagedShard:
    """A listed shard the viewer leaves out, and why."""

    path: str
    kind: Kind
    rows: int
    problem: str


@dataclass(frozen=True)
class Snapshot:
    """One reading of a dataset: its manifest, the shards that match it and the ones that do not."""

    root: Path
    manifest: Manifest
    good: tuple[ShardInfo, ...]
    damaged: tuple[DamagedShard, ...]

    @property
    def key(self) -> tuple[Any, ...]:
        """What the figures computed from this reading depend on: the manifest's version (runs and
        their tokens are shown too) and the shards read, by content."""
        return (self.manifest.updated_at, *((s.path, s.sha256) for s in self.good))

    def rows(self, kind: Kind) -> int:
        """Rows of one kind in the shards that check out (the manifest's count for each)."""
        return sum(s.rows for s in self.good if s.kind == kind)

    def frame(self, kind: Kind) -> pl.LazyFrame:
        """A LazyFrame over the good shards of one kind, with the dataset's fixed schema (as
        `synth.shards.read.scan` builds it, minus the shards that failed their check)."""
        files = [(str(shard_path(self.root, s)), s) for s in self.good if s.kind == kind]
        return shards_frame(files, shard_schema(kind))


def take_snapshot(root: Path) -> Snapshot:
    """Read the manifest and check every shard it lists; a DatasetError if the manifest is unreadable.
    Checksums are computed once per file state (`shard_problem` remembers them by size and mtime)."""
    manifest = read_manifest(root)
    good: list[ShardInfo] = []
    damaged: list[DamagedShard] = []
    for shard in manifest.shards:
        try:
            problem = shard_problem(root, shard)
        except (DatasetError, OSError) as e:
            problem = str(e)
        if problem is None:
            good.append(shard)
        else:
            damaged.append(DamagedShard(shard.path, shard.kind, shard.rows, problem))
    return Snapshot(root, manifest, tuple(good), tuple(damaged))


@dataclass
class DatasetView:
    """One dataset given on the command line, with the figures computed for its current shards."""

    number: int
    root: Path
    _cache_key: tuple[Any, ...] | None = None
    _cache: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _computing: dict[str, threading.Lock] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.root.resolve().name or str(self.root)

    def snapshot(self) -> Snapshot:
        if not is_dataset(self.root):
            raise DatasetError(f"{self.root}: {MANIFEST} is gone; not a dataset folder any more")
        return take_snapshot(self.root)

    def cached(self, snapshot: Snapshot, name: str, compute: Callable[[], T]) -> T:
        """`compute()` once per state of the shards: figures over the whole dataset (the overview,
        the filters' values) are computed again only when the shards change. A second request for
        a figure being computed waits for it instead of computing it again."""
        with self._lock:
            computing = self._computing.setdefault(name, threading.Lock())
        with computing:
            with self._lock:
                if self._cache_key != snapshot.key:
                    self._cache_key, self._cache = snapshot.key, {}
                if name in self._cache:
                    return self._cache[name]  # type: ignore[no-any-return]
            value = compute()
            with self._lock:
                if self._cache_key == snapshot.key:
                    self._cache[name] = value
            return value


def open_datasets(paths: list[Path]) -> list[DatasetView]:
    """A view per folder, numbered in the order given; a folder that is not a dataset is a DatasetError."""
    views = []
    for number, path in enumerate(paths):
        if not is_dataset(path):
            raise DatasetError(f"{path}: no {MANIFEST}; not a dataset folder")
        read_manifest(path)  # an unreadable manifest is refused now, before anything is served
        views.append(DatasetView(number, path))
    return views
