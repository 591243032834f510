"""Reading a dataset: every shard the manifest lists is checked against it (present, size,
checksum) before it is read, and a damaged one is refused by name."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Literal

import polars as pl

from synth.schemas import ShardInfo
from synth.shards.columns import shard_schema
from synth.shards.layout import (
    MANIFEST,
    DamagedShardError,
    DatasetError,
    inside,
    is_dataset,
    read_manifest,
    staged_name,
)
from synth.shards.legacy import flat_columns, gathered, shards_frame

# Shards whose checksum this process has confirmed, by (path, size, mtime): a run scans the same
# shards several times (dedup indexes, novelty pool, resume state) and each is hashed once.
_CONFIRMED: set[tuple[str, int, int]] = set()


def shard_problem(root: Path, shard: ShardInfo, checksum: bool = True) -> str | None:
    """What is wrong with one listed shard on disk (None if it matches the manifest)."""
    file = inside(root, shard.path, "shard entry")
    if not file.exists() and staged_name(file).is_file():
        file = staged_name(file)  # committed a moment ago; its writer is renaming it
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
    return file if file.exists() or not staged_name(file).is_file() else staged_name(file)


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
    if not is_dataset(root):
        raise DatasetError(f"{root}: no {MANIFEST}; not a dataset directory")
    manifest = read_manifest(root)
    shards = [s for s in manifest.shards if s.kind == kind]
    files = [(str(checked_path(root, s) if check else shard_path(root, s)), s) for s in shards]
    # Shards written before a column existed read it as null; columns a newer writer added are
    # ignored; the flat fields of shards from before a block's move are gathered into it.
    return shards_frame(files, shard_schema(kind))


def kept_frames(
    root: Path, columns: Sequence[str] | None = None, shards: Iterable[ShardInfo] | None = None
) -> Iterator[pl.DataFrame]:
    """The dataset's kept shards (of `shards`, default every one the manifest lists) one frame at a
    time, each checked against the manifest first: memory holds a shard, never the dataset."""
    for shard in read_manifest(root).shards if shards is None else shards:
        if shard.kind == "kept":
            path = checked_path(root, shard)
            if (flat := flat_columns(path, shard)) is not None:
                frame = gathered(pl.scan_parquet(path, glob=False), flat)
                yield (frame if columns is None else frame.select(columns)).collect()
            else:
                yield pl.read_parquet(path, columns=None if columns is None else list(columns), glob=False)


def verify(path: str | Path) -> list[str]:
    """Check every listed shard against its recorded size and checksum; returns the problems found."""
    root = Path(path)
    problems = []
    for shard in read_manifest(root).shards:
        if (problem := shard_problem(root, shard)) is not None:
            problems.append(f"{shard.path}: {problem}")
    return problems
