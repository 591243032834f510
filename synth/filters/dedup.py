"""Near-duplicate removal against the whole dataset (MinHash LSH; exact duplicates: `exact_dedup`).

The index starts from every kept record already in the dataset's shards, so a new run never
re-adds what an earlier run wrote. The MinHash index persists in `DIR/index/minhash/` with its
scheme and parameters; it is brought up to date with the manifest's shards when opened (a crash
can only leave it behind, never ahead), and an index built with other signature parameters is
refused unless rebuilt.
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from synth.filters import lsh_kernels
from synth.filters.base import reject
from synth.filters.families import within_families
from synth.filters.minhash import (
    Index,
    SignedBatch,
    banding,
    frame_texts,
    from_shingles,
    matches,
    measure_name,
    sign,
    signature_params,
)
from synth.filters.spill import KeyTable, Spill, Strings, digests
from synth.schemas import Outcome, Record, ShardInfo
from synth.schemas.curation import MinHashConfig
from synth.shards.atomic import atomic_write_bytes
from synth.shards.layout import DatasetError, is_dataset, read_manifest
from synth.shards.read import kept_frames


def record_text(r: Record) -> str:
    return "\n".join((r.instruction, r.input, r.output))


class IndexMismatchError(ValueError):
    """A persisted index built with other parameters; the message says how to rebuild it."""


class MinHashIndex:
    """The shingle sets of every kept record of a dataset, their signatures banded for LSH lookups
    in a compiled open-addressing table: per record, 4 bytes per distinct shingle and 8 to 16 per
    band, and with `verify: estimate` its signature (4 bytes per permutation) instead of its
    shingles being what candidates are confirmed on. These arrays, the records' ids and the ids'
    digests live in files mapped into memory (`Spill`, next to the persisted index when there is a
    dataset), so they cost disk, not memory the run could die of: what the process itself holds is
    the pending batch's ids, not the run's."""

    def __init__(self, config: MinHashConfig, spill: Spill | None = None) -> None:
        self.config = config
        self.bands, self.rows = banding(config.threshold, config.num_perm)
        self._spill = spill or Spill()
        self.ids = Strings(self._spill)
        self._known = KeyTable(self._spill)  # the ids' digests, row for row
        # Buffers that double when full, in files mapped into memory. Signatures are kept only to
        # confirm candidates on them.
        self._sigs = self._spill.empty((1024, config.num_perm if config.verify == "estimate" else 0), np.uint32)
        self._shingles = self._spill.empty(16 * 1024, np.uint32)
        self._offsets = self._spill.empty(1025, np.int64)
        self._table = self._spill.full(1 << 14, lsh_kernels.EMPTY, np.uint64)
        self._pending: dict[str, int] = {}  # id -> row, for records not yet persisted
        self._committed = 0  # rows below this belong to committed batches

    def commit(self) -> None:
        """Records added so far are in the dataset (they stay pending until `sync` persists them)."""
        self._committed = len(self.ids)

    def rollback(self) -> None:
        """Forget the records added since the last commit: their batch never reached the dataset."""
        keep = self._committed
        if keep == len(self.ids):
            return
        for rid in self.ids[keep:]:
            self._pending.pop(rid, None)
        self.ids.truncate(keep)
        self._known.truncate(keep)
        table = self._spill.full(len(self._table), lsh_kernels.EMPTY, np.uint64)
        lsh_kernels.table_rehash(self._table, table, lsh_kernels.table_shift(table), keep)
        self._table = table

    @property
    def sigs(self) -> np.ndarray:
        return self._sigs[: len(self.ids)]

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def measure(self) -> str:
        return measure_name(self.config)

    def contains(self, ids: Sequence[str]) -> list[bool]:
        """Whether each id is indexed already."""
        return (self._known.find(digests(ids)) >= 0).tolist() if len(ids) else []

    def rows_of(self, rows: Sequence[int]) -> SignedBatch:
        """Indexed records as a batch, by row (without signatures unless the index keeps them)."""
        n = len(self.ids)
        whole = SignedBatch(self.sigs, self._shingles[: self._offsets[n]], self._offsets[: n + 1])
        return whole.take(rows)

    @contextmanager
    def locked(self) -> Iterator[None]:
        """One process owns an in-memory index: nothing to lock (the Redis index locks)."""
        yield

    def _reserve(self, new_rows: int, new_shingles: int) -> None:
        start, end = len(self.ids), len(self.ids) + new_rows
        if end > len(self._sigs):
            size = max(end, 2 * len(self._sigs))
            self._sigs = self._spill.grown(self._sigs, size, start)
            self._offsets = self._spill.grown(self._offsets, size + 1, start + 1)
        used = int(self._offsets[start])
        self._shingles = self._spill.at_least(self._shingles, used + new_shingles, used)
        entries = end * self.bands
        if 2 * entries > len(self._table):
            size = len(self._table)
            while 2 * entries > size:
                size *= 2
            table = self._spill.full(size, lsh_kernels.EMPTY, np.uint64)
            lsh_kernels.table_rehash(self._table, table, lsh_kernels.table_shift(table))
            self._table = table

    def add(self, ids: Sequence[str], batch: SignedBatch, remember: bool = True) -> None:
        if not len(ids):
            return
        self._reserve(len(ids), len(batch.shingles))
        start, end = len(self.ids), len(self.ids) + len(ids)
        self._sigs[start:end] = batch.sigs[:, : self._sigs.shape[1]]
        used = int(self._offsets[start])
        self._shingles[used : used + len(batch.shingles)] = batch.shingles
        self._offsets[start + 1 : end + 1] = used + batch.offsets[1:]
        keys = batch.keys(self.bands, self.rows)
        lsh_kernels.table_insert(self._table, lsh_kernels.table_shift(self._table), keys, start)
        self.ids.extend(ids)
        self._known.add(digests(ids))
        if remember:
            self._pending.update(zip(ids, range(start, end), strict=True))
        else:  # loaded from the dataset: committed already
            self._committed = len(self.ids)

    def duplicates(self, batch: SignedBatch) -> list[tuple[int, float] | None]:
        """For each new text, (index row or -1 - earlier batch position, similarity) of the indexed
        or earlier-in-batch text it is most similar to at or above the threshold, or None."""
        n = len(batch)
        match = np.full(n, lsh_kernels.NO_MATCH, dtype=np.int64)
        score = np.zeros(n, dtype=np.float64)
        if n:
            rows = len(self.ids)
            lsh_kernels.find_duplicates(
                batch.keys(self.bands, self.rows),
                batch.sigs,
                batch.shingles,
                batch.offsets,
                self._table,
                lsh_kernels.table_shift(self._table),
                self.sigs,
                self._shingles,
                self._offsets[: rows + 1],
                self.config.verify == "exact",
                self.config.threshold,
                match,
                score,
            )
        return matches(match, score)

    # -- persistence next to a dataset -----------------------------------------------------------

    def meta(self) -> dict:
        return signature_params(self.config)

    @classmethod
    def open(cls, dataset: str | Path, config: MinHashConfig, rebuild: bool = False) -> MinHashIndex:
        """The dataset's index, loaded and brought up to date with its kept shards.

        The persisted index is derived state and is checked against the manifest: one that is
        unreadable, names shards the dataset no longer lists, or holds another number of records
        than they do, is rebuilt from the shards (the result equals an intact index)."""
        root = Path(dataset)
        folder = index_folder(root)
        spill = Spill(folder if root.is_dir() else None)
        index = cls(config, spill)
        if rebuild:
            _clear(folder)
        elif (folder / "meta.json").exists():
            try:
                covered = index._load(root, folder)
            except IndexMismatchError:
                raise
            except Exception as e:  # whatever is wrong with derived state, rebuild it
                _log.warning("%s: %s; rebuilding it from the dataset's shards", folder, _why(e))
                _clear(folder)
                index = cls(config, spill)
            else:
                index.sync(dataset, covered)
                return index
        index.sync(dataset, [])
        return index

    def _load(self, root: Path, folder: Path) -> list[str]:
        meta = json.loads((folder / "meta.json").read_text())
        if not isinstance(meta, dict) or not isinstance(meta.get("params"), dict):
            raise ValueError("meta.json holds no parameters")
        if meta["params"] != self.meta():
            raise IndexMismatchError(
                f"{folder}: built with {meta['params']}, asked for {self.meta()}; "
                "rebuild it (`synth curate DIR --rebuild-index`) or use the same settings"
            )
        covered, parts = meta.get("shards"), meta.get("parts")
        if not isinstance(covered, list) or not isinstance(parts, list):
            raise ValueError("meta.json lists no shards or parts")
        listed = {s.path: s.rows for s in read_manifest(root).shards if s.kind == "kept"}
        stale = [p for p in covered if p not in listed]
        if stale:
            raise ValueError(f"it covers shards the dataset no longer lists ({stale[0]})")
        for part in parts:
            if not isinstance(part, str) or not _PART.fullmatch(part):
                raise ValueError(f"meta.json names an unexpected part {part!r}")
            frame = pl.read_parquet(folder / part, glob=False)
            self.add(frame["id"].to_list(), _frame_batch(frame, self.config), remember=False)
        expected = sum(listed[p] for p in covered)
        if len(self.ids) != expected:
            raise ValueError(f"it holds {len(self.ids)} records, the shards it covers hold {expected}")
        return list(covered)

    def sync(self, dataset: str | Path, covered: list[str] | None = None) -> None:
        """Index the kept shards the persisted index does not cover yet, and persist the result:
        a part per group of shards of about `SYNC_ROWS` records, so that catching up with a large
        dataset holds one group's text at a time."""
        root = Path(dataset)
        if not is_dataset(root):
            return
        folder = index_folder(root)
        meta_file = folder / "meta.json"
        meta = (
            json.loads(meta_file.read_text())
            if meta_file.is_file()
            else {"params": self.meta(), "shards": [], "parts": []}
        )
        done = set(covered if covered is not None else meta["shards"])
        shards = [s for s in read_manifest(root).shards if s.kind == "kept" and s.path not in done]
        if not shards:
            return
        group: list[ShardInfo] = []
        for k, shard in enumerate(shards):
            group.append(shard)
            if k + 1 == len(shards) or sum(s.rows for s in group) + shards[k + 1].rows > SYNC_ROWS:
                meta = self._persist(root, folder, group, done, meta)
                group = []
        self._pending.clear()

    def _persist(self, root: Path, folder: Path, shards: list[ShardInfo], done: set[str], meta: dict) -> dict:
        """Index `shards` (those the filter has not indexed already) and write them as one part."""
        frame = pl.concat(kept_frames(root, ["id", "instruction", "input", "output"], shards))
        ids = frame["id"].to_list()
        # Rows of the records the filter indexed already; the others are signed and added now.
        rows = [self._pending.get(i, -1) for i in ids]
        todo = [k for k, row in enumerate(rows) if row < 0]
        if todo:
            first = len(self.ids)
            self.add([ids[k] for k in todo], sign(frame_texts(frame[todo]), self.config), remember=False)
            for k, row in zip(todo, range(first, first + len(todo)), strict=True):
                rows[k] = row
        batch = self.rows_of(rows)
        folder.mkdir(parents=True, exist_ok=True)
        part = f"part-{len(meta['parts']):05d}.parquet"
        buffer = io.BytesIO()
        _batch_frame(ids, batch).write_parquet(buffer)
        atomic_write_bytes(folder / part, buffer.getvalue())
        done.update(s.path for s in shards)
        meta = {"params": self.meta(), "shards": sorted(done), "parts": [*meta["parts"], part]}
        atomic_write_bytes(folder / "meta.json", json.dumps(meta, indent=2).encode())
        return meta


SYNC_ROWS = 50_000
_PART = re.compile(r"part-[0-9]{5}\.parquet")
_log = logging.getLogger(__name__)


def _why(error: Exception) -> str:
    text = str(error).splitlines()[0] if str(error) else ""
    return f"damaged index ({type(error).__name__}{': ' + text[:200] if text else ''})"


def index_folder(root: Path, name: str = "minhash") -> Path:
    """`DIR/index/NAME`, refused if either folder is a symlink (it could lead anywhere)."""
    for folder in (root / "index", root / "index" / name):
        if folder.is_symlink():
            raise DatasetError(f"{folder}: is a symlink; the index must be a folder inside the dataset")
    return root / "index" / name


def _clear(folder: Path) -> None:
    """Remove the index's own files (what else the folder holds is not ours to delete)."""
    if not folder.is_dir():
        return
    for file in folder.iterdir():
        ours = file.name == "meta.json" or _PART.fullmatch(file.name) or file.name.endswith(".tmp")
        if ours and (file.is_file() or file.is_symlink()):
            file.unlink()


def _batch_frame(ids: Sequence[str], batch: SignedBatch) -> pl.DataFrame:
    """Ids and shingle sets as a frame (how index parts are stored; signatures follow from them)."""
    shingles = pa.LargeListArray.from_arrays(pa.array(batch.offsets, pa.int64()), pa.array(batch.shingles, pa.uint32()))
    return pl.DataFrame({"id": list(ids)}).with_columns(pl.Series("shingles", shingles))


def _frame_batch(frame: pl.DataFrame, config: MinHashConfig) -> SignedBatch:
    lengths = frame["shingles"].list.len().to_numpy().astype(np.int64)
    shingles = frame["shingles"].explode().drop_nulls().to_numpy().astype(np.uint32)
    return from_shingles(shingles, np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), config)


class NearDedupFilter:
    """Drops records whose similarity (exact shingle-set Jaccard, or its MinHash estimate) to a
    record already in the dataset, or earlier in the batch, reaches the threshold.

    A record whose id the index already holds was admitted before (a retried or resumed batch
    regenerates the same records): it is kept as it is, never counted as its own duplicate."""

    stage = "dedup"

    def __init__(self, index: Index) -> None:
        self.index = index

    def commit(self) -> None:
        self.index.commit()

    def rollback(self) -> None:
        self.index.rollback()

    def apply(self, records: Sequence[Record]) -> Outcome:
        result = Outcome()
        if not records:
            return result
        # A shared index tags what it stages with its run and batch, so a batch that never commits
        # can be traced and dropped by whoever meets it next (see `redis_leases`).
        label = getattr(self.index, "label", None)
        if label is not None:
            label(records[0].run_id, records[0].batch)
        # Check and insert as one step, so concurrent writers to a shared index never both keep a pair.
        with self.index.locked():
            known = self.index.contains([r.id for r in records])
            fresh = [r for r, seen in zip(records, known, strict=True) if not seen]
            batch = sign([record_text(r) for r in fresh], self.index.config)
            found = within_families(fresh, self.index.duplicates(batch), self.index, record_text)
            keep = [i for i, dup in enumerate(found) if dup is None]
            self.index.add([fresh[i].id for i in keep], batch.take(keep))
        verdicts = iter(found)
        for r, seen in zip(records, known, strict=True):
            dup = None if seen else next(verdicts)
            if dup is None:
                result.kept.append(r)
                continue
            j, score = dup
            other = self.index.ids[j] if j >= 0 else fresh[-1 - j].id
            result.rejects.append(
                reject(r, self.stage, "near duplicate", detail=f"{self.index.measure} {score:.2f} with {other}")
            )
        return result
