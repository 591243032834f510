"""What a dataset folder holds and which of its paths can be trusted.

The manifest lists every shard; each listed path must be `data/NAME.parquet` or
`rejects/NAME.parquet` and stay inside the folder. Staged shards (`NAME.parquet.staged`) and our
temporary files are the only other files a writer leaves in the shard folders, and only for the
moment between a commit's steps (see `synth.shards.store`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TypeGuard

from synth.schemas import SCHEMA_VERSION, Manifest

MANIFEST = "manifest.json"
LOCK = ".lock"
# What the model runtime's processes printed while starting, in quiet mode (`synth -v` shows it instead).
LIBRARY_LOG = "library.log"
QUARANTINE = "quarantine"
STAGED = ".staged"
SHARD_DIRS = {"kept": "data", "rejects": "rejects"}
# What a dataset folder may hold besides shards (our own derived state and outputs).
OWN_ENTRIES = {MANIFEST, "README.md", LOCK, "index", "staging", "export", QUARANTINE, *SHARD_DIRS.values()}
_SHARD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\.parquet")


class DatasetError(RuntimeError):
    """A dataset directory that cannot be used as asked; the message names it."""


class DatasetBusyError(DatasetError):
    """Another process is writing to the same dataset."""


class DamagedShardError(DatasetError):
    """A listed shard is missing or does not match the manifest; the message names it."""


def is_dataset(path: str | Path | None) -> TypeGuard[str | Path]:
    """Whether `path` is a dataset folder (it holds a manifest)."""
    return path is not None and (Path(path) / MANIFEST).is_file()


def is_temp(path: Path) -> bool:
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
        if folder != SHARD_DIRS[shard.kind] or not _SHARD_NAME.fullmatch(name):
            raise DatasetError(
                f"{root / MANIFEST}: shard entry {shard.path!r} is not a {shard.kind} shard of this dataset "
                f"(expected {SHARD_DIRS[shard.kind]}/NAME.parquet); refusing to use it"
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
    for sub in SHARD_DIRS.values():
        folder = root / sub
        if folder.is_dir() and not folder.is_symlink():
            found.extend(sorted(p for p in folder.iterdir()))
    return found


def staged_name(path: Path) -> Path:
    return path.with_name(path.name + STAGED)


def is_staged(path: Path) -> bool:
    """A shard one of our writers staged (a crash can leave one behind; never a link)."""
    return path.name.endswith(STAGED) and path.is_file() and not path.is_symlink()


def unlisted_files(root: Path, manifest: Manifest) -> list[str]:
    """The files in the shard folders that `manifest` does not list (as shards, or as retired
    shards about to be removed), other than our own temporary and staged files."""
    listed = {s.path for s in [*manifest.shards, *manifest.retired]}
    return [
        rel
        for f in shard_files(root)
        if (rel := f"{f.parent.name}/{f.name}") not in listed and not is_temp(f) and not is_staged(f)
    ]


def refuse_shards_without_manifest(root: Path) -> None:
    """Refuse a folder whose shard folders hold files but that has no manifest (a lost manifest):
    nothing is written over shards no manifest lists."""
    if not (root / MANIFEST).exists() and any(not is_temp(f) for f in shard_files(root)):
        raise DatasetError(
            f"{root}: holds shards but no {MANIFEST}; nothing was written. "
            f"`synth verify {root} --repair` rebuilds the manifest from the shards"
        )


def refuse_unlisted(root: Path, manifest: Manifest) -> None:
    """Refuse a folder holding shards its manifest does not list: an emptied manifest, or files
    someone else put there. We never write over (or delete) what we did not list."""
    stray = unlisted_files(root, manifest)
    if stray:
        more = f" and {len(stray) - 3} more" if len(stray) > 3 else ""
        raise DatasetError(
            f"{root}: holds shards its manifest does not list ({', '.join(stray[:3])}{more}); "
            f"nothing was written. Run `synth verify {root}` to see why, `--repair` to fix it"
        )
