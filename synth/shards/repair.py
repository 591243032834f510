"""Checking a dataset folder against its manifest, and repairing it without deleting anything.

`check` reads every listed shard (present, size, checksum, row count, readable as Parquet) and
lists the files in the shard folders that the manifest does not. `repair` moves what is damaged or
unlisted into `DIR/quarantine/STAMP/` and rewrites the manifest with what remains, recording what
was set aside and why; a folder whose manifest is lost, emptied or unreadable gets a new one
rebuilt from the shards it can read (entries marked `recovered`, checksums recomputed).
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq

from synth.schemas import Manifest, QuarantineEntry, RunInfo, ShardInfo
from synth.shards.atomic import atomic_write_bytes
from synth.shards.card import write_card
from synth.shards.layout import (
    MANIFEST,
    QUARANTINE,
    SHARD_DIRS,
    DatasetError,
    is_temp,
    read_manifest,
    shard_files,
    unlisted_files,
)
from synth.shards.lock import acquire_lock, release_lock
from synth.shards.read import shard_problem

_KINDS = {folder: kind for kind, folder in SHARD_DIRS.items()}


@dataclass
class Report:
    """What `check` found: one line per problem, and whether the manifest itself is usable."""

    path: Path
    manifest_error: str = ""
    damaged: dict[str, str] = field(default_factory=dict)  # listed shard -> what is wrong
    unlisted: list[str] = field(default_factory=list)  # files in the shard folders the manifest does not list
    shards: int = 0
    rows: int = 0

    @property
    def ok(self) -> bool:
        return not (self.manifest_error or self.damaged or self.unlisted)

    def problems(self) -> list[str]:
        lines = [f"{self.path / MANIFEST}: {self.manifest_error}"] if self.manifest_error else []
        lines += [f"{self.path / p}: {why}" for p, why in self.damaged.items()]
        lines += [f"{self.path / p}: not listed in the manifest" for p in self.unlisted]
        return lines


def _rows_problem(file: Path, rows: int) -> str | None:
    try:
        actual = pq.read_metadata(file).num_rows
    except Exception as e:  # any failure to parse means the file is unreadable
        return f"not readable as Parquet ({type(e).__name__})"
    return None if actual == rows else f"holds {actual} rows, the manifest says {rows}"


def _rel(file: Path) -> str:
    return f"{file.parent.name}/{file.name}"


def check(path: str | Path) -> Report:
    """Every problem of the dataset at `path`; changes nothing."""
    root = Path(path)
    report = Report(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such dataset directory")
    try:
        if not (root / MANIFEST).exists():
            raise DatasetError("missing")
        manifest = read_manifest(root)
    except DatasetError as e:
        report.manifest_error = str(e).removeprefix(f"{root / MANIFEST}: ")
        report.unlisted = [_rel(f) for f in shard_files(root) if not is_temp(f)]
        if not report.unlisted and report.manifest_error == "missing":
            raise DatasetError(f"{root}: holds no dataset (no {MANIFEST} and no shards)") from None
        return report
    for shard in manifest.shards:
        problem = shard_problem(root, shard) or _rows_problem(root / shard.path, shard.rows)
        if problem is not None:
            report.damaged[shard.path] = problem
        else:
            report.shards += 1
            report.rows += shard.rows
    report.unlisted = unlisted_files(root, manifest)
    return report


def _move_aside(root: Path, rel: str, stamp: str) -> str:
    """Move `root/rel` (a file or a link, never followed) into the quarantine; returns where to."""
    target = root / QUARANTINE / stamp / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(root / rel, target)
    return str(target.relative_to(root))


def _recover_shard(root: Path, file: Path) -> ShardInfo:
    """A listing for a shard file found on disk (its own run id, batch and row count)."""
    kind = _KINDS[file.parent.name]
    data = file.read_bytes()
    table = pq.read_table(file, columns=["run_id", "batch"])
    runs = Counter(table.column("run_id").to_pylist())
    batches = table.column("batch").to_pylist()
    return ShardInfo(
        path=_rel(file),
        kind=kind,  # type: ignore[arg-type]
        rows=table.num_rows,
        bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        run_id=runs.most_common(1)[0][0] if runs else "recovered",
        batch=max((b for b in batches if b is not None), default=0),
        recovered=True,
    )


def _recovered_runs(root: Path, shards: list[ShardInfo]) -> dict[str, RunInfo]:
    runs: dict[str, RunInfo] = {}
    for shard in shards:
        run = runs.get(shard.run_id)
        if run is None:
            generators = Counter(pq.read_table(root / shard.path, columns=["generator"]).column(0).to_pylist())
            generator = generators.most_common(1)[0][0] if generators else "recovered"
            run = runs[shard.run_id] = RunInfo(
                run_id=shard.run_id, generator=generator, config={"recovered": True}, engine={}, status="finished"
            )
        run.batches_done = max(run.batches_done, shard.batch + 1)
        if shard.kind == "kept":
            run.kept += shard.rows
        else:
            run.rejected += shard.rows
    return runs


def repair(path: str | Path) -> tuple[Report, list[QuarantineEntry]]:
    """Set aside what `check` finds wrong and rewrite the manifest with what remains (rebuilt from
    the shards when it is unusable). Nothing is deleted. Holds the dataset's writer lock."""
    root = Path(path)
    lock = acquire_lock(root, holder="synth verify --repair")
    try:
        report = check(root)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
        moved: list[QuarantineEntry] = []
        if report.manifest_error:
            manifest = Manifest(dataset_id=uuid.uuid4().hex)
            if (root / MANIFEST).exists() or (root / MANIFEST).is_symlink():
                to = _move_aside(root, MANIFEST, stamp)
                moved.append(QuarantineEntry(path=MANIFEST, moved_to=to, reason=report.manifest_error))
            for rel in report.unlisted:
                file = root / rel
                try:
                    if file.is_symlink() or not file.is_file() or not file.name.endswith(".parquet"):
                        raise ValueError("not a shard file")
                    manifest.shards.append(_recover_shard(root, file))
                except Exception as e:  # whatever cannot be read is set aside
                    reason = f"could not be read as a shard ({type(e).__name__})"
                    moved.append(QuarantineEntry(path=rel, moved_to=_move_aside(root, rel, stamp), reason=reason))
            manifest.runs = _recovered_runs(root, manifest.shards)
        else:
            manifest = read_manifest(root)
            for rel, why in report.damaged.items():
                shard = next(s for s in manifest.shards if s.path == rel)
                manifest.shards.remove(shard)
                run = manifest.runs.get(shard.run_id)
                if run is not None:  # the run's counts say what the dataset holds
                    if shard.kind == "kept":
                        run.kept = max(0, run.kept - shard.rows)
                    else:
                        run.rejected = max(0, run.rejected - shard.rows)
                exists = (root / rel).exists() or (root / rel).is_symlink()
                to = _move_aside(root, rel, stamp) if exists else ""
                moved.append(QuarantineEntry(path=rel, moved_to=to, reason=why))
            for rel in report.unlisted:
                moved.append(
                    QuarantineEntry(
                        path=rel, moved_to=_move_aside(root, rel, stamp), reason="not listed in the manifest"
                    )
                )
            if any(e.path.startswith("data/") for e in moved):
                # Records left the dataset: indexes shared under the dataset's id start afresh.
                manifest.dataset_id = uuid.uuid4().hex
        manifest.quarantined.extend(moved)
        manifest.updated_at = datetime.now(UTC)
        atomic_write_bytes(root / MANIFEST, manifest.model_dump_json(indent=2).encode())
        write_card(root, manifest)
        return report, moved
    finally:
        release_lock(lock)
