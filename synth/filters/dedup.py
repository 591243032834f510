"""Duplicate removal against the whole dataset: exact (normalized text) and near (MinHash LSH).

Both indexes start from every kept record already in the dataset's shards, so a new run never
re-adds what an earlier run wrote. The MinHash index persists in `DIR/index/minhash/` with its
scheme and parameters; it is brought up to date with the manifest's shards when opened (a crash
can only leave it behind, never ahead), and an index built with other signature parameters is
refused unless rebuilt.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import polars as pl

from synth.filters.base import FilterResult, reject
from synth.filters.minhash import (
    band_keys,
    banding,
    estimated_jaccard,
    frame_texts,
    mark_within_batch,
    signature_params,
    signatures,
)
from synth.filters.redis_index import RedisMinHashIndex
from synth.schemas import Record
from synth.schemas.curation import MinHashConfig
from synth.shards.store import MANIFEST, atomic_write_bytes, read_manifest, scan


def record_text(r: Record) -> str:
    return "\n".join((r.instruction, r.input, r.output))


def normalized_key(instruction: str, input: str, output: str) -> bytes:
    text = "\x1f".join(" ".join(part.lower().split()) for part in (instruction, input, output))
    return hashlib.blake2b(text.encode(), digest_size=12).digest()


class ExactDedupFilter:
    """Drops records whose normalized text (case and whitespace folded) is already in the dataset
    or earlier in the batch."""

    stage = "dedup"

    def __init__(self, dataset: str | Path | None = None) -> None:
        self.seen: dict[bytes, str] = {}
        if dataset is not None and (Path(dataset) / MANIFEST).is_file():
            for rid, ins, inp, out in (
                scan(dataset).select("id", "instruction", "input", "output").collect().iter_rows()
            ):
                self.seen.setdefault(normalized_key(ins, inp, out), rid)

    def apply(self, records: Sequence[Record]) -> FilterResult:
        result = FilterResult()
        for r in records:
            key = normalized_key(r.instruction, r.input, r.output)
            if (first := self.seen.get(key)) is not None:
                result.rejects.append(reject(r, self.stage, "exact duplicate", detail=f"same text as {first}"))
            else:
                self.seen[key] = r.id
                result.kept.append(r)
        return result


class IndexMismatchError(ValueError):
    """A persisted index built with other parameters; the message says how to rebuild it."""


class MinHashIndex:
    """Signatures of every kept record of a dataset, banded for LSH lookups, kept in memory."""

    def __init__(self, config: MinHashConfig) -> None:
        self.config = config
        self.bands, self.rows = banding(config.threshold, config.num_perm)
        self.ids: list[str] = []
        # Signatures live in a buffer that doubles when full: adding a batch never copies the index.
        self._buffer = np.empty((1024, config.num_perm), dtype=np.uint32)
        self._keys = pl.DataFrame(schema={"key": pl.UInt64, "row": pl.Int64})
        self._pending: dict[str, int] = {}  # id -> row, for records not yet persisted

    @property
    def sigs(self) -> np.ndarray:
        return self._buffer[: len(self.ids)]

    def __len__(self) -> int:
        return len(self.ids)

    @contextmanager
    def locked(self) -> Iterator[None]:
        """One process owns an in-memory index: nothing to lock (the Redis index locks)."""
        yield

    def add(self, ids: Sequence[str], sigs: np.ndarray, remember: bool = True) -> None:
        start, end = len(self.ids), len(self.ids) + len(ids)
        if end > len(self._buffer):
            grown = np.empty((max(end, 2 * len(self._buffer)), self.config.num_perm), dtype=np.uint32)
            grown[:start] = self._buffer[:start]
            self._buffer = grown
        self._buffer[start:end] = sigs
        self.ids.extend(ids)
        keys = band_keys(sigs, self.bands, self.rows)
        rows = np.repeat(np.arange(start, end), self.bands)
        self._keys = pl.concat([self._keys, pl.DataFrame({"key": keys.ravel(), "row": rows})], rechunk=False)
        if remember:
            self._pending.update(zip(ids, range(start, end), strict=True))

    def duplicates(self, sigs: np.ndarray) -> list[tuple[int, float] | None]:
        """For each new signature, (index row or -1 - earlier batch position, estimated Jaccard) of
        the first indexed or earlier-in-batch text it nearly duplicates, or None."""
        n = len(sigs)
        keys = band_keys(sigs, self.bands, self.rows)
        new = pl.DataFrame({"key": keys.ravel(), "new": np.repeat(np.arange(n), self.bands)})
        found: list[tuple[int, float] | None] = [None] * n
        pairs = new.join(self._keys, on="key").select("new", "row").unique().sort("new", "row")
        if pairs.height:
            left, right = pairs["new"].to_numpy(), pairs["row"].to_numpy()
            scores = estimated_jaccard(sigs[left], self.sigs[right])
            for i, j, s in zip(left, right, scores, strict=True):
                if s >= self.config.threshold and found[i] is None:
                    found[i] = (int(j), float(s))
        mark_within_batch(sigs, keys, found, self.config.threshold)
        return found

    # -- persistence next to a dataset -----------------------------------------------------------

    def meta(self) -> dict:
        return signature_params(self.config)

    @classmethod
    def open(cls, dataset: str | Path, config: MinHashConfig, rebuild: bool = False) -> MinHashIndex:
        """The dataset's index, loaded and brought up to date with its kept shards."""
        index = cls(config)
        folder = Path(dataset) / "index" / "minhash"
        meta_file = folder / "meta.json"
        if rebuild and folder.exists():
            shutil.rmtree(folder)
        covered: list[str] = []
        if meta_file.is_file():
            meta = json.loads(meta_file.read_text())
            if meta["params"] != index.meta():
                raise IndexMismatchError(
                    f"{folder}: built with {meta['params']}, asked for {index.meta()}; "
                    "rebuild it (`synth curate DIR --rebuild-index`) or use the same settings"
                )
            covered = meta["shards"]
            for part in meta["parts"]:
                frame = pl.read_parquet(folder / part)
                index.add(frame["id"].to_list(), frame["sig"].to_numpy().astype(np.uint32), remember=False)
        index.sync(dataset, covered)
        return index

    def sync(self, dataset: str | Path, covered: list[str] | None = None) -> None:
        """Index the kept shards the persisted index does not cover yet, and persist the result."""
        root = Path(dataset)
        if not (root / MANIFEST).is_file():
            return
        folder = root / "index" / "minhash"
        meta_file = folder / "meta.json"
        meta = (
            json.loads(meta_file.read_text())
            if meta_file.is_file()
            else {"params": self.meta(), "shards": [], "parts": []}
        )
        done = set(covered if covered is not None else meta["shards"])
        missing = [s.path for s in read_manifest(root).shards if s.kind == "kept" and s.path not in done]
        if not missing:
            return
        frame = pl.concat(
            [pl.read_parquet(root / p, columns=["id", "instruction", "input", "output"]) for p in missing]
        )
        ids = frame["id"].to_list()
        have = [self._pending.get(i) for i in ids]
        todo = [k for k, row in enumerate(have) if row is None]
        sigs = np.empty((len(ids), self.config.num_perm), dtype=np.uint32)
        for k, row in enumerate(have):
            if row is not None:
                sigs[k] = self._buffer[row]
        if todo:
            sigs[todo] = signatures(frame_texts(frame[todo]), self.config)
            self.add([ids[k] for k in todo], sigs[todo], remember=False)
        folder.mkdir(parents=True, exist_ok=True)
        part = f"part-{len(meta['parts']):05d}.parquet"
        buffer = io.BytesIO()
        pl.DataFrame({"id": ids, "sig": sigs}).write_parquet(buffer)
        atomic_write_bytes(folder / part, buffer.getvalue())
        meta = {"params": self.meta(), "shards": sorted(done | set(missing)), "parts": [*meta["parts"], part]}
        atomic_write_bytes(meta_file, json.dumps(meta, indent=2).encode())
        self._pending.clear()


class NearDedupFilter:
    """Drops records whose MinHash-estimated Jaccard similarity to a record already in the dataset,
    or earlier in the batch, reaches the threshold."""

    stage = "dedup"

    def __init__(self, index: MinHashIndex | RedisMinHashIndex) -> None:
        self.index = index

    def apply(self, records: Sequence[Record]) -> FilterResult:
        result = FilterResult()
        if not records:
            return result
        sigs = signatures([record_text(r) for r in records], self.index.config)
        # Check and insert as one step, so concurrent writers to a shared index never both keep a pair.
        with self.index.locked():
            found = self.index.duplicates(sigs)
            keep = [i for i, dup in enumerate(found) if dup is None]
            self.index.add([records[i].id for i in keep], sigs[keep])
        for r, dup in zip(records, found, strict=True):
            if dup is None:
                result.kept.append(r)
                continue
            j, score = dup
            other = self.index.ids[j] if j >= 0 else records[-1 - j].id
            result.rejects.append(
                reject(r, self.stage, "near duplicate", detail=f"estimated Jaccard {score:.2f} with {other}")
            )
        return result
