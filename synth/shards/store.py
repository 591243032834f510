"""A dataset directory: Parquet shards of kept records and rejects, listed by `manifest.json`.

Layout::

    DIR/manifest.json          which shards exist, each run's config and progress
    DIR/README.md              dataset card (rebuilt from the manifest on every commit)
    DIR/data/*.parquet         kept records
    DIR/rejects/*.parquet      rejects, with `stage` and `reason`

Writes are crash-safe: a shard is written to a temporary name, flushed and renamed, and only then
listed in the manifest, which itself is replaced atomically. The manifest is the truth: a shard it
does not list (left by a crash between the two steps) is never read and is removed on the next
open. One writer at a time holds the directory's lock; a second one fails at once with a clear error.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Literal

import polars as pl

from synth.schemas import SCHEMA_VERSION, Manifest, Record, Reject, RunInfo, ShardInfo
from synth.shards.card import write_card
from synth.shards.columns import RECORD_SCHEMA, REJECT_SCHEMA, to_frame

MANIFEST = "manifest.json"
_DIRS = {"kept": "data", "rejects": "rejects"}


class DatasetError(RuntimeError):
    """A dataset directory that cannot be used as asked; the message names it."""


class DatasetBusyError(DatasetError):
    """Another process is writing to the same dataset."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _count_rejects(run: RunInfo, rejects: Sequence[Reject]) -> None:
    for r in rejects:
        bucket = run.rejects_by_reason.setdefault(r.stage, {})
        bucket[r.reason] = bucket.get(r.reason, 0) + 1


def _is_temp(path: Path) -> bool:
    """A temporary file of `atomic_write_bytes` (a crash can leave one behind)."""
    return path.is_file() and path.name.startswith(".") and path.name.endswith(".tmp")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the whole new one, never a part."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def read_manifest(path: str | Path) -> Manifest:
    """The manifest of the dataset at `path` (an empty one if the directory holds no dataset yet)."""
    file = Path(path) / MANIFEST
    if not file.is_file():
        return Manifest()
    try:
        manifest = Manifest.model_validate_json(file.read_bytes())
    except ValueError as e:
        raise DatasetError(f"{file}: not a valid manifest: {e}") from None
    if manifest.schema_version > SCHEMA_VERSION:
        raise DatasetError(
            f"{file}: schema version {manifest.schema_version} is newer than this tool's {SCHEMA_VERSION}"
        )
    return manifest


class DatasetWriter:
    """Appends shards to a dataset directory; use as a context manager (it holds the lock)."""

    def __init__(self, path: str | Path, shard_rows: int = 10_000) -> None:
        self.path = Path(path)
        self.shard_rows = shard_rows
        self.manifest = Manifest()
        self._lock: IO[str] | None = None

    def __enter__(self) -> DatasetWriter:
        if self.path.exists() and not self.path.is_dir():
            raise DatasetError(f"{self.path}: exists and is not a directory")
        if self.path.is_dir() and not (self.path / MANIFEST).exists():
            foreign = {p.name for p in self.path.iterdir() if not _is_temp(p)} - {*_DIRS.values(), ".lock"}
            if foreign:
                raise DatasetError(f"{self.path}: directory is not empty and holds no dataset; choose another --out")
        for sub in _DIRS.values():
            (self.path / sub).mkdir(parents=True, exist_ok=True)
        lock = open(self.path / ".lock", "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise DatasetBusyError(
                f"{self.path}: another run is writing to this dataset; wait for it to finish"
            ) from None
        self._lock = lock
        self.manifest = read_manifest(self.path)
        self._remove_orphans()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def _remove_orphans(self) -> None:
        """Remove what a crashed writer left: unlisted shards and half-written temporary files."""
        listed = {s.path for s in self.manifest.shards}
        for file in self.path.iterdir():
            if _is_temp(file):
                file.unlink()
        for sub in _DIRS.values():
            for file in (self.path / sub).iterdir():
                rel = f"{sub}/{file.name}"
                if rel not in listed and (file.suffix == ".parquet" or _is_temp(file)):
                    file.unlink()

    def start_run(self, run: RunInfo) -> RunInfo:
        """Register `run`, or reopen the recorded one with the same id (its progress kept, its
        config replaced by the new one, which may ask for more) so the caller can resume it."""
        manifest = self.manifest.model_copy(deep=True)
        existing = manifest.runs.get(run.run_id)
        if existing is not None:
            existing.status = "running"
            existing.config = run.config
        else:
            manifest.runs[run.run_id] = run
        self._save(manifest)
        return self.manifest.runs[run.run_id]

    def _write_shards(
        self, rows: Sequence[Record], kind: Literal["kept", "rejects"], run_id: str, batch: int
    ) -> list[ShardInfo]:
        schema = RECORD_SCHEMA if kind == "kept" else REJECT_SCHEMA
        shards = []
        for part, start in enumerate(range(0, len(rows), self.shard_rows)):
            chunk = rows[start : start + self.shard_rows]
            rel = f"{_DIRS[kind]}/{run_id}-b{batch:05d}-{part:03d}.parquet"
            frame = to_frame(chunk, schema)
            # Serialize in memory, then write atomically: the file appears whole or not at all.
            buffer = io.BytesIO()
            frame.write_parquet(buffer, compression="zstd", statistics=True)
            data = buffer.getvalue()
            atomic_write_bytes(self.path / rel, data)
            shards.append(
                ShardInfo(
                    path=rel,
                    kind=kind,
                    rows=len(chunk),
                    bytes=len(data),
                    sha256=hashlib.sha256(data).hexdigest(),
                    run_id=run_id,
                    batch=batch,
                )
            )
        return shards

    def commit_batch(
        self,
        run_id: str,
        batch: int,
        kept: Sequence[Record],
        rejects: Sequence[Reject],
        state: dict | None = None,
    ) -> list[ShardInfo]:
        """Write one batch's records and rejects, then record the batch as done in the manifest.

        A crash before the manifest is replaced leaves the batch unrecorded: it is generated again
        on resume and its stray shards are removed, so no record is ever written twice.
        """
        if batch < self.manifest.runs[run_id].batches_done:
            raise DatasetError(f"{self.path}: batch {batch} of run {run_id} is already committed")
        shards = self._write_shards(list(kept), "kept", run_id, batch) + self._write_shards(
            list(rejects), "rejects", run_id, batch
        )
        # Change a copy and adopt it only once it is on disk: a failed manifest write leaves this
        # writer as it was, so the same batch can be retried.
        manifest = self.manifest.model_copy(deep=True)
        manifest.shards.extend(shards)
        run = manifest.runs[run_id]
        run.batches_done = batch + 1
        run.kept += len(kept)
        run.rejected += len(rejects)
        _count_rejects(run, rejects)
        if state is not None:
            run.state = state
        run.updated_at = datetime.now(UTC)
        self._save(manifest)
        return shards

    def replace_kept(self, run_id: str, kept: Sequence[Record], rejects: Sequence[Reject]) -> list[ShardInfo]:
        """Swap every kept shard for `kept` and add `rejects`, as one batch of run `run_id` (curating
        a dataset in place). The old kept files are removed only after the new manifest is on disk."""
        batch = self.manifest.runs[run_id].batches_done
        shards = self._write_shards(list(kept), "kept", run_id, batch) + self._write_shards(
            list(rejects), "rejects", run_id, batch
        )
        manifest = self.manifest.model_copy(deep=True)
        old = [s for s in manifest.shards if s.kind == "kept"]
        manifest.shards = [s for s in manifest.shards if s.kind != "kept"] + shards
        run = manifest.runs[run_id]
        run.batches_done = batch + 1
        run.kept = len(kept)
        run.rejected += len(rejects)
        _count_rejects(run, rejects)
        run.updated_at = datetime.now(UTC)
        self._save(manifest)
        for s in old:
            (self.path / s.path).unlink(missing_ok=True)
        return shards

    def finish_run(self, run_id: str) -> None:
        manifest = self.manifest.model_copy(deep=True)
        run = manifest.runs[run_id]
        run.status = "finished"
        run.updated_at = datetime.now(UTC)
        self._save(manifest)

    def _save(self, manifest: Manifest | None = None) -> None:
        """Write `manifest` (default: the current one) and adopt it once it is on disk."""
        manifest = manifest or self.manifest
        manifest.updated_at = datetime.now(UTC)
        atomic_write_bytes(self.path / MANIFEST, manifest.model_dump_json(indent=2).encode())
        self.manifest = manifest
        write_card(self.path, manifest)


def scan(path: str | Path, kind: Literal["kept", "rejects"] = "kept") -> pl.LazyFrame:
    """One LazyFrame over every shard of one kind the manifest lists (checksums not verified)."""
    root = Path(path)
    if not (root / MANIFEST).is_file():
        raise DatasetError(f"{root}: no {MANIFEST}; not a dataset directory")
    manifest = read_manifest(root)
    files = [str(root / s.path) for s in manifest.shards if s.kind == kind]
    schema = RECORD_SCHEMA if kind == "kept" else REJECT_SCHEMA
    if not files:
        return pl.LazyFrame(schema=schema)
    return pl.scan_parquet(files, schema=schema)


def verify(path: str | Path) -> list[str]:
    """Check every listed shard against its recorded size and checksum; returns the problems found."""
    root = Path(path)
    problems = []
    for shard in read_manifest(root).shards:
        file = root / shard.path
        if not file.is_file():
            problems.append(f"{shard.path}: missing")
            continue
        data = file.read_bytes()
        if hashlib.sha256(data).hexdigest() != shard.sha256:
            problems.append(f"{shard.path}: checksum mismatch")
    return problems
