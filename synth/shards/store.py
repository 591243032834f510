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
import errno
import fcntl
import hashlib
import io
import json
import os
import re
import socket
import time
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Literal

import polars as pl

from synth.schemas import SCHEMA_VERSION, Manifest, Record, Reject, RunInfo, ShardInfo
from synth.shards.atomic import atomic_write_bytes, fsync_dir
from synth.shards.card import write_card
from synth.shards.columns import RECORD_SCHEMA, REJECT_SCHEMA, to_frame

MANIFEST = "manifest.json"
LOCK = ".lock"
QUARANTINE = "quarantine"
STAGED = ".staged"
_DIRS = {"kept": "data", "rejects": "rejects"}
# What a dataset folder may hold besides shards (our own derived state and outputs).
_OWN = {MANIFEST, "README.md", LOCK, "index", "staging", "export", QUARANTINE, *_DIRS.values()}
_SHARD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\.parquet")


class DatasetError(RuntimeError):
    """A dataset directory that cannot be used as asked; the message names it."""


class DatasetBusyError(DatasetError):
    """Another process is writing to the same dataset."""


class DamagedShardError(DatasetError):
    """A listed shard is missing or does not match the manifest; the message names it."""


def _count_rejects(run: RunInfo, rejects: Sequence[Reject]) -> None:
    for r in rejects:
        bucket = run.rejects_by_reason.setdefault(r.stage, {})
        bucket[r.reason] = bucket.get(r.reason, 0) + 1


def _is_temp(path: Path) -> bool:
    """A temporary file of `atomic_write_bytes` (a crash can leave one behind)."""
    return path.is_file() and not path.is_symlink() and path.name.startswith(".") and path.name.endswith(".tmp")


def inside(root: Path, rel: str, what: str) -> Path:
    """`root / rel` when it stays inside `root` (no absolute path, no `..`, no symlink leading
    out); otherwise a DatasetError naming the entry."""
    if not rel or rel.startswith(("/", "\\")) or ".." in Path(rel).parts or "\\" in rel:
        raise DatasetError(f"{root}: {what} {rel!r} points outside the dataset; refusing to use it")
    path = root / rel
    real_root = root.resolve()
    if not path.resolve().is_relative_to(real_root):
        raise DatasetError(f"{root}: {what} {rel!r} leads outside the dataset (symlink); refusing to use it")
    return path


def _check_shard_paths(root: Path, manifest: Manifest) -> None:
    for shard in [*manifest.shards, *manifest.retired]:
        folder, _, name = shard.path.partition("/")
        if folder != _DIRS[shard.kind] or not _SHARD_NAME.fullmatch(name):
            raise DatasetError(
                f"{root / MANIFEST}: shard entry {shard.path!r} is not a {shard.kind} shard of this dataset "
                f"(expected {_DIRS[shard.kind]}/NAME.parquet); refusing to use it"
            )
        inside(root, shard.path, "shard entry")
    paths = [s.path for s in manifest.shards]
    if len(set(paths)) != len(paths):
        twice = sorted({p for p in paths if paths.count(p) > 1})
        raise DatasetError(f"{root / MANIFEST}: shard {twice[0]!r} is listed twice")


def read_manifest(path: str | Path) -> Manifest:
    """The manifest of the dataset at `path` (an empty one if the directory holds no dataset yet).

    A manifest that does not parse, lacks its shard list, or names a path outside the folder is a
    DatasetError naming the file."""
    root = Path(path)
    file = root / MANIFEST
    if not file.exists():
        return Manifest()
    try:
        raw = json.loads(file.read_bytes())
        if not isinstance(raw, dict) or "shards" not in raw or "runs" not in raw:
            raise ValueError("it lists no shards and no runs")
        manifest = Manifest.model_validate(raw)
    except (ValueError, UnicodeDecodeError, OSError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DatasetError(
            f"{file}: not a valid manifest ({reason}); `synth verify {root} --repair` rebuilds it from the shards"
        ) from None
    if manifest.schema_version > SCHEMA_VERSION:
        raise DatasetError(
            f"{file}: schema version {manifest.schema_version} is newer than this tool's {SCHEMA_VERSION}"
        )
    _check_shard_paths(root, manifest)
    return manifest


def shard_files(root: Path) -> list[Path]:
    """Every file in the shard folders (`data/`, `rejects/`), whatever its name."""
    found: list[Path] = []
    for sub in _DIRS.values():
        folder = root / sub
        if folder.is_dir() and not folder.is_symlink():
            found.extend(sorted(p for p in folder.iterdir()))
    return found


def _staged(path: Path) -> Path:
    return path.with_name(path.name + STAGED)


def _is_staged(path: Path) -> bool:
    """A shard one of our writers staged (a crash can leave one behind; never a link)."""
    return path.name.endswith(STAGED) and path.is_file() and not path.is_symlink()


def unlisted_files(root: Path, manifest: Manifest) -> list[str]:
    """The files in the shard folders that `manifest` does not list (as shards, or as retired
    shards about to be removed), other than our own temporary and staged files."""
    listed = {s.path for s in [*manifest.shards, *manifest.retired]}
    return [
        rel
        for f in shard_files(root)
        if (rel := f"{f.parent.name}/{f.name}") not in listed and not _is_temp(f) and not _is_staged(f)
    ]


def _holder(lock_file: Path) -> str:
    try:
        info = json.loads(lock_file.read_text())
        return f"run {info.get('run', '?')}, pid {info.get('pid', '?')} on {info.get('host', '?')}"
    except (OSError, ValueError):
        return "another process"


def acquire_lock(path: Path, wait: float | None = 0, holder: str = "") -> IO[str]:
    """Take the dataset's writer lock (`DIR/.lock`, which then names the holder). `wait`: seconds
    to wait for the current holder (0: fail at once naming it; None: no limit)."""
    lock_file = path / LOCK
    if lock_file.is_symlink():
        raise DatasetError(f"{lock_file}: is a symlink; refusing to use it as the writer lock")
    lock = open(lock_file, "a+")  # noqa: SIM115 - held until release_lock
    deadline = None if wait is None else time.monotonic() + wait
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if deadline is not None and time.monotonic() >= deadline:
                lock.close()
                waited = f" after waiting {wait:g} s" if wait else ""
                raise DatasetBusyError(
                    f"{path}: another writer holds this dataset ({_holder(lock_file)}){waited}; "
                    "wait for it to finish, or pass --wait SECONDS"
                ) from None
            time.sleep(0.2)
    lock.seek(0)
    lock.truncate()
    lock.write(json.dumps({"run": holder or "?", "pid": os.getpid(), "host": socket.gethostname()}))
    lock.flush()
    return lock


def release_lock(lock: IO[str]) -> None:
    fcntl.flock(lock, fcntl.LOCK_UN)
    lock.close()


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
            if any(not _is_temp(f) for f in shard_files(self.path)):
                raise DatasetError(
                    f"{self.path}: holds shards but no {MANIFEST}; nothing was written. "
                    f"`synth verify {self.path} --repair` rebuilds the manifest from the shards"
                )
            foreign = {p.name for p in self.path.iterdir() if not _is_temp(p)} - {*_DIRS.values(), LOCK}
            if foreign:
                raise DatasetError(f"{self.path}: directory is not empty and holds no dataset; choose another --out")
        for sub in _DIRS.values():
            folder = self.path / sub
            if folder.is_symlink():
                raise DatasetError(f"{folder}: is a symlink; a dataset's shard folders must be real folders")
            folder.mkdir(parents=True, exist_ok=True)
        self._acquire()
        try:
            self.manifest = read_manifest(self.path)
            self._refuse_unlisted()
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

    def _refuse_unlisted(self) -> None:
        """Refuse a folder holding shards its manifest does not list: a lost or emptied manifest,
        or files someone else put there. We never write over (or delete) what we did not list."""
        stray = unlisted_files(self.path, self.manifest)
        if stray:
            more = f" and {len(stray) - 3} more" if len(stray) > 3 else ""
            raise DatasetError(
                f"{self.path}: holds shards its manifest does not list ({', '.join(stray[:3])}{more}); "
                f"nothing was written. Run `synth verify {self.path}` to see why, `--repair` to fix it"
            )

    def _finish_interrupted(self) -> None:
        """Complete what a crashed writer left half done: rename staged shards the manifest lists,
        remove staged shards it does not (their batch was never recorded), remove retired shards,
        and remove half-written temporary files."""
        listed = {s.path for s in self.manifest.shards}
        for file in self.path.iterdir():
            if _is_temp(file):
                file.unlink()
        for file in shard_files(self.path):
            rel = f"{file.parent.name}/{file.name}"
            if _is_temp(file):
                file.unlink()
            elif _is_staged(file):
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
        else:
            manifest.runs[run.run_id] = run
        self._save(manifest)
        return self.manifest.runs[run.run_id]

    def _write_shards(
        self, rows: Sequence[Record], kind: Literal["kept", "rejects"], run_id: str, batch: int, first_part: int = 0
    ) -> list[ShardInfo]:
        """Write `rows` as staged shards (whole files under names no `*.parquet` glob matches);
        `_publish` gives them their final names once the manifest lists them."""
        schema = RECORD_SCHEMA if kind == "kept" else REJECT_SCHEMA
        shards = []
        for part, start in enumerate(range(0, len(rows), self.shard_rows), start=first_part):
            chunk = rows[start : start + self.shard_rows]
            rel = f"{_DIRS[kind]}/{run_id}-b{batch:05d}-{part:03d}.parquet"
            frame = to_frame(chunk, schema)
            # Serialize in memory, then write atomically: the file appears whole or not at all.
            buffer = io.BytesIO()
            frame.write_parquet(buffer, compression="zstd", statistics=True)
            data = buffer.getvalue()
            atomic_write_bytes(_staged(self.path / rel), data)
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

    def _discard(self, shards: Sequence[ShardInfo]) -> None:
        for s in shards:
            _staged(self.path / s.path).unlink(missing_ok=True)

    def _publish(self, shards: Sequence[ShardInfo]) -> None:
        """Give staged shards that the manifest now lists their final names."""
        for s in shards:
            os.replace(_staged(self.path / s.path), self.path / s.path)
        if shards:
            for sub in {s.path.partition("/")[0] for s in shards}:
                fsync_dir(self.path / sub)

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
            _count_rejects(run, rejects)
            if state is not None:
                run.state = state
            run.updated_at = datetime.now(UTC)
            self._save(manifest, card=False)
        except BaseException:
            self._discard(shards)
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
                _count_rejects(run, rejects)
            manifest.retired = [s for s in manifest.shards if s.kind == "kept"]
            manifest.shards = [s for s in manifest.shards if s.kind != "kept"] + shards
            run.batches_done = batch + 1
            run.updated_at = datetime.now(UTC)
            self._save(manifest, card=False)
        except BaseException:
            self._discard(shards)
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
        atomic_write_bytes(self.path / MANIFEST, manifest.model_dump_json(indent=2).encode())
        self.manifest = manifest
        if card:
            self._write_card()

    def _write_card(self) -> None:
        write_card(self.path, self.manifest)


# Shards whose checksum this process has confirmed, by (path, size, mtime): a run scans the same
# shards several times (dedup indexes, novelty pool, resume state) and each is hashed once.
_CONFIRMED: set[tuple[str, int, int]] = set()


def shard_problem(root: Path, shard: ShardInfo, checksum: bool = True) -> str | None:
    """What is wrong with one listed shard on disk (None if it matches the manifest)."""
    file = inside(root, shard.path, "shard entry")
    if not file.exists() and _staged(file).is_file():
        file = _staged(file)  # committed a moment ago; its writer is renaming it
    if file.is_symlink() or not file.exists():
        return "missing"
    if not file.is_file():
        return "not a file"
    stat = file.stat()
    if stat.st_size != shard.bytes:
        return f"size {stat.st_size} bytes, the manifest says {shard.bytes}"
    if checksum:
        key = (str(file.resolve()), stat.st_size, stat.st_mtime_ns)
        if key not in _CONFIRMED:
            digest = hashlib.sha256()
            with open(file, "rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
            if digest.hexdigest() != shard.sha256:
                return "checksum mismatch (the file changed after it was written)"
            _CONFIRMED.add(key)
    return None


def shard_path(root: Path, shard: ShardInfo) -> Path:
    file = root / shard.path
    return file if file.exists() or not _staged(file).is_file() else _staged(file)


def checked_path(root: Path, shard: ShardInfo) -> Path:
    """Where to read a listed shard, once it is checked against the manifest (else DamagedShardError)."""
    if (problem := shard_problem(root, shard)) is not None:
        raise DamagedShardError(
            f"{root / shard.path}: {problem}; run `synth verify {root}` (and `--repair` to set it aside)"
        )
    return shard_path(root, shard)


def scan(path: str | Path, kind: Literal["kept", "rejects"] = "kept", check: bool = True) -> pl.LazyFrame:
    """One LazyFrame over every shard of one kind the manifest lists. Each is checked against the
    manifest first (present, size, checksum): a damaged shard is a DamagedShardError naming it."""
    root = Path(path)
    if not (root / MANIFEST).is_file():
        raise DatasetError(f"{root}: no {MANIFEST}; not a dataset directory")
    manifest = read_manifest(root)
    shards = [s for s in manifest.shards if s.kind == kind]
    files = [str(checked_path(root, s) if check else shard_path(root, s)) for s in shards]
    schema = RECORD_SCHEMA if kind == "kept" else REJECT_SCHEMA
    if not files:
        return pl.LazyFrame(schema=schema)
    # Shards written before a column existed read it as null.
    return pl.scan_parquet(files, schema=schema, glob=False, missing_columns="insert")


def verify(path: str | Path) -> list[str]:
    """Check every listed shard against its recorded size and checksum; returns the problems found."""
    root = Path(path)
    problems = []
    for shard in read_manifest(root).shards:
        if (problem := shard_problem(root, shard)) is not None:
            problems.append(f"{shard.path}: {problem}")
    return problems


def disk_full(error: BaseException) -> bool:
    """Whether this one error is a full disk or quota (also when a library reports the OS error
    only in its message, as Rust's io::Error does)."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(error)
    return "No space left on device" in text or "Disk quota exceeded" in text


def is_disk_full(error: BaseException | None) -> bool:
    """Whether `error`, or an error it was raised from, is a full disk (or quota)."""
    seen = 0
    while error is not None and seen < 20:
        if disk_full(error):
            return True
        error = error.__cause__ or error.__context__
        seen += 1
    return False
