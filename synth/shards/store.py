"""A dataset directory: Parquet shards of kept records and rejects, listed by `manifest.json`.

Layout::

    DIR/manifest.json          which shards exist, each run's config and progress
    DIR/README.md              dataset card (rebuilt from the manifest on every commit)
    DIR/data/*.parquet         kept records
    DIR/rejects/*.parquet      rejects, with `stage` and `reason`
    DIR/quarantine/            what `synth verify --repair` set aside (never deleted)

Writes are crash-safe and a shard's final name appears only once the manifest lists it: a batch's
shards are written whole under a staged name (`data/NAME.parquet.staged`, which no `*.parquet`
glob matches), the manifest that lists them is replaced atomically, and only then are they renamed
to their final names. A crash before the manifest lands leaves staged files that the next writer
removes (the batch is generated again); a crash after it leaves staged files that the next writer
(or a reader) completes. So `data/*.parquet` never shows an uncommitted shard, and no record is
ever written twice. Shards a commit replaces are listed as retired in the manifest before they
are removed, so a crash in between never leaves them behind unlisted.

A dataset folder is untrusted input (datasets are copied and shared): every path the manifest
names must stay inside the folder, and no writer deletes or replaces a file the manifest does not
list. A folder holding shards that no readable manifest lists is refused by every writer; `synth
verify --repair` rebuilds its manifest from the shards. Every reader checks each shard it reads
against the manifest (present, size, checksum) and refuses a damaged one, naming it.

One writer at a time holds the folder's lock (`.lock`, which names the holder); a second one
fails at once naming the holder, or waits for it when asked to.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal

from synth.schemas import Manifest, Record, Reject, RunInfo, ShardInfo
from synth.schemas.manifest import BLOCKS_LAYOUT
from synth.schemas.records import count_reasons
from synth.shards.atomic import ReplacedNotSyncedError, atomic_write_bytes, fsync_dir
from synth.shards.card import write_card
from synth.shards.columns import shard_schema, to_frame
from synth.shards.layout import (
    LIBRARY_LOG,
    LOCK,
    MANIFEST,
    SHARD_DIRS,
    STAGED,
    DatasetError,
    inside,
    is_staged,
    is_temp,
    read_manifest,
    refuse_shards_without_manifest,
    refuse_unlisted,
    shard_files,
    staged_name,
)
from synth.shards.lock import acquire_lock, release_lock


class DatasetWriter:
    """Appends shards to a dataset directory; use as a context manager (it holds the lock).

    `wait`: seconds to wait for another writer to finish (0: fail at once naming it; None: wait
    as long as it takes). `holder`: what the lock file says holds it (a run id or command)."""

    def __init__(self, path: str | Path, shard_rows: int = 10_000, wait: float | None = 0, holder: str = "") -> None:
        self.path = Path(path)
        self.shard_rows = shard_rows
        self.wait = wait
        self.holder = holder
        self.manifest = Manifest()
        self._lock: IO[str] | None = None
        self._reopened: dict[str, str] = {}  # run id -> its status before `start_run`, until it commits

    def __enter__(self) -> DatasetWriter:
        if self.path.exists() and not self.path.is_dir():
            raise DatasetError(f"{self.path}: exists and is not a directory")
        if self.path.is_dir() and not (self.path / MANIFEST).exists():
            refuse_shards_without_manifest(self.path)
            foreign = {p.name for p in self.path.iterdir() if not is_temp(p)} - {
                *SHARD_DIRS.values(),
                LOCK,
                LIBRARY_LOG,
            }
            if foreign:
                raise DatasetError(f"{self.path}: directory is not empty and holds no dataset; choose another --out")
        for sub in SHARD_DIRS.values():
            folder = self.path / sub
            if folder.is_symlink():
                raise DatasetError(f"{folder}: is a symlink; a dataset's shard folders must be real folders")
            folder.mkdir(parents=True, exist_ok=True)
        self._acquire()
        try:
            self.manifest = read_manifest(self.path)
            refuse_unlisted(self.path, self.manifest)
            self._finish_interrupted()
            if not self.manifest.dataset_id:
                manifest = self.manifest.model_copy(deep=True)
                manifest.dataset_id = uuid.uuid4().hex
                self._save(manifest)
        except BaseException:
            self._release()
            raise
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        try:
            if exc_type is not None:
                self._restore_status()
        finally:
            self._release()

    def _restore_status(self) -> None:
        """A run reopened but ended by an error before it committed anything keeps the status it
        had: a failed start never turns a finished run back into a running one."""
        changed = {rid: old for rid, old in self._reopened.items() if self.manifest.runs[rid].status != old}
        if not changed:
            return
        manifest = self.manifest.model_copy(deep=True)
        for rid, old in changed.items():
            manifest.runs[rid].status = old  # type: ignore[assignment]
        with contextlib.suppress(OSError):  # the error that ended the run is the one to report
            self._save(manifest)

    def _acquire(self) -> None:
        self._lock = acquire_lock(self.path, self.wait, self.holder)

    def _release(self) -> None:
        if self._lock is not None:
            release_lock(self._lock)
            self._lock = None

    def _finish_interrupted(self) -> None:
        """Complete what a crashed writer left half done: rename staged shards the manifest lists,
        remove staged shards it does not (their batch was never recorded), remove retired shards,
        and remove half-written temporary files."""
        listed = {s.path for s in self.manifest.shards}
        for file in self.path.iterdir():
            if is_temp(file):
                file.unlink()
        for file in shard_files(self.path):
            rel = f"{file.parent.name}/{file.name}"
            if is_temp(file):
                file.unlink()
            elif is_staged(file):
                final = rel[: -len(STAGED)]
                if final in listed and not (self.path / final).exists():
                    os.replace(file, self.path / final)
                else:
                    file.unlink()
        if self.manifest.retired:
            manifest = self.manifest.model_copy(deep=True)
            self._remove_retired(manifest)

    def _remove_retired(self, manifest: Manifest) -> None:
        retired, manifest.retired = manifest.retired, []
        self._save(manifest)
        for shard in retired:
            file = inside(self.path, shard.path, "retired shard")
            if file.is_file() and not file.is_symlink():
                file.unlink()

    def start_run(self, run: RunInfo) -> RunInfo:
        """Register `run`, or reopen the recorded one with the same id (its progress kept, its
        config replaced by the new one, which may ask for more) so the caller can resume it."""
        manifest = self.manifest.model_copy(deep=True)
        existing = manifest.runs.get(run.run_id)
        if existing is not None:
            self._reopened.setdefault(run.run_id, existing.status)
            existing.status = "running"
            existing.config = run.config
            existing.curation = run.curation
        else:
            manifest.runs[run.run_id] = run
        self._save(manifest)
        return self.manifest.runs[run.run_id]

    def _write_shards(
        self, rows: Sequence[Record], kind: Literal["kept", "rejects"], run_id: str, batch: int, first_part: int = 0
    ) -> list[ShardInfo]:
        """Write `rows` as staged shards (whole files under names no `*.parquet` glob matches);
        `_publish` gives them their final names once the manifest lists them."""
        schema = shard_schema(kind)
        shards = []
        for part, start in enumerate(range(0, len(rows), self.shard_rows), start=first_part):
            chunk = rows[start : start + self.shard_rows]
            rel = f"{SHARD_DIRS[kind]}/{run_id}-b{batch:05d}-{part:03d}.parquet"
            frame = to_frame(chunk, schema)
            # Serialize in memory, then write atomically: the file appears whole or not at all.
            buffer = io.BytesIO()
            frame.write_parquet(buffer, compression="zstd", statistics=True)
            data = buffer.getvalue()
            atomic_write_bytes(staged_name(self.path / rel), data)
            shards.append(
                ShardInfo(
                    path=rel,
                    kind=kind,
                    rows=len(chunk),
                    bytes=len(data),
                    sha256=hashlib.sha256(data).hexdigest(),
                    run_id=run_id,
                    batch=batch,
                    layout=BLOCKS_LAYOUT,
                )
            )
        return shards

    def _discard(self, shards: Sequence[ShardInfo]) -> None:
        for s in shards:
            staged_name(self.path / s.path).unlink(missing_ok=True)

    def _undo(self, shards: Sequence[ShardInfo], manifest: Manifest) -> None:
        """After a failed commit: remove its staged shards, unless the manifest that lists them is
        on disk already (only syncing its folder failed). Then the commit stands, and its shards
        get their names now if the disk allows, else when the dataset is next opened."""
        if self.manifest is not manifest:
            self._discard(shards)
            return
        with contextlib.suppress(OSError):
            self._publish(shards)

    def _publish(self, shards: Sequence[ShardInfo]) -> None:
        """Give staged shards that the manifest now lists their final names."""
        for s in shards:
            os.replace(staged_name(self.path / s.path), self.path / s.path)
        if shards:
            for sub in {s.path.partition("/")[0] for s in shards}:
                fsync_dir(self.path / sub)

    def commit_batch(
        self,
        run_id: str,
        batch: int,
        kept: Sequence[Record],
        rejects: Sequence[Reject],
        state: Mapping[str, Any] | None = None,
    ) -> list[ShardInfo]:
        """Write one batch's records and rejects, then record the batch as done in the manifest.

        A crash before the manifest is replaced leaves the batch unrecorded: it is generated again
        on resume and its staged shards are removed, so no record is ever written twice.
        """
        if batch < self.manifest.runs[run_id].batches_done:
            raise DatasetError(f"{self.path}: batch {batch} of run {run_id} is already committed")
        shards: list[ShardInfo] = []
        try:
            shards += self._write_shards(list(kept), "kept", run_id, batch)
            shards += self._write_shards(list(rejects), "rejects", run_id, batch)
            # Change a copy and adopt it only once it is on disk: a failed manifest write leaves this
            # writer as it was, so the same batch can be retried.
            manifest = self.manifest.model_copy(deep=True)
            manifest.shards.extend(shards)
            run = manifest.runs[run_id]
            run.batches_done = batch + 1
            run.kept += len(kept)
            run.rejected += len(rejects)
            count_reasons(rejects, into=run.rejects_by_reason)
            if state is not None:
                run.state = dict(state)
            run.updated_at = datetime.now(UTC)
            self._save(manifest, card=False)
        except BaseException:
            self._undo(shards, manifest)
            raise
        self._reopened.pop(run_id, None)
        self._publish(shards)
        self._write_card()
        return shards

    def replace_kept(
        self, run_id: str, batches: Iterable[tuple[Sequence[Record], Sequence[Reject]]]
    ) -> list[ShardInfo]:
        """Swap every kept shard for the kept records of `batches` and add their rejects, as one
        batch of run `run_id` (curating a dataset in place). Shards are written as the batches come,
        so memory holds one batch; the old kept shards are retired in the same manifest write."""
        batch = self.manifest.runs[run_id].batches_done
        shards: list[ShardInfo] = []
        manifest = self.manifest.model_copy(deep=True)
        run = manifest.runs[run_id]
        run.kept = 0
        try:
            for kept, rejects in batches:
                shards += self._write_shards(list(kept), "kept", run_id, batch, first_part=len(shards))
                shards += self._write_shards(list(rejects), "rejects", run_id, batch, first_part=len(shards))
                run.kept += len(kept)
                run.rejected += len(rejects)
                count_reasons(rejects, into=run.rejects_by_reason)
            manifest.retired = [s for s in manifest.shards if s.kind == "kept"]
            manifest.shards = [s for s in manifest.shards if s.kind != "kept"] + shards
            run.batches_done = batch + 1
            run.updated_at = datetime.now(UTC)
            self._save(manifest, card=False)
        except BaseException:
            self._undo(shards, manifest)
            raise
        self._publish(shards)
        self._remove_retired(self.manifest.model_copy(deep=True))
        return shards

    def finish_run(self, run_id: str) -> None:
        manifest = self.manifest.model_copy(deep=True)
        run = manifest.runs[run_id]
        run.status = "finished"
        run.updated_at = datetime.now(UTC)
        self._save(manifest)

    def _save(self, manifest: Manifest | None = None, card: bool = True) -> None:
        """Write `manifest` (default: the current one) and adopt it once it is on disk."""
        manifest = manifest or self.manifest
        manifest.updated_at = datetime.now(UTC)
        try:
            atomic_write_bytes(self.path / MANIFEST, manifest.model_dump_json(indent=2).encode())
        except ReplacedNotSyncedError:
            self.manifest = manifest  # it is the dataset's manifest now, synced or not
            raise
        self.manifest = manifest
        if card:
            self._write_card()

    def _write_card(self) -> None:
        write_card(self.path, self.manifest)
