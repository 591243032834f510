"""The MinHash index in Redis, shared by every worker and machine that writes one dataset.

Layout under `synth:minhash:{namespace}:{params hash}`, where the namespace is the dataset's id
from its manifest (or `minhash.namespace`, to share one index between datasets on purpose): one set of record ids per LSH band key
(`:b:{key}`), the signatures in a hash (`:sig`), the shingle sets in another (`:sh`), the
parameters (`:meta`). A batch is checked and
inserted under one Redis lock, so two workers can never both keep near-duplicate records. All
commands of a batch go through pipelines; a Redis that cannot be reached is an error naming its
URL, raised before anything of the batch is written; it is not retried for minutes (socket
timeouts are a few seconds, and Redis errors are not transient for the batch retry).

A batch's records enter the index when the filter keeps them and leave it again (`rollback`) when
the batch is not committed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from synth.filters import lsh_kernels
from synth.filters.minhash import (
    SignedBatch,
    banding,
    frame_texts,
    matches,
    measure_name,
    sign,
    signature_params,
    similarity,
    within_batch,
)
from synth.schemas.curation import MinHashConfig
from synth.shards.layout import MANIFEST
from synth.shards.read import scan


class RedisUnavailableError(RuntimeError):
    """Redis did not answer; the message names the URL."""


def namespace_for(dataset: str | Path | None, config: MinHashConfig) -> str:
    """The index's name: the configured namespace, else the dataset's id (kept in its manifest)."""
    if config.namespace:
        return config.namespace
    if dataset is None:
        raise ValueError("the Redis MinHash index needs a dataset or an explicit minhash.namespace")
    from synth.shards.layout import read_manifest

    dataset_id = read_manifest(dataset).dataset_id
    if not dataset_id:
        raise ValueError(f"{dataset}: the dataset has no id yet (open it with its writer first)")
    return dataset_id


class RedisMinHashIndex:
    def __init__(self, config: MinHashConfig, namespace: str) -> None:
        import redis

        self.config = config
        self.bands, self.rows = banding(config.threshold, config.num_perm)
        self.params = signature_params(config)
        digest = hashlib.sha256(json.dumps(self.params, sort_keys=True).encode()).hexdigest()[:10]
        self.ns = f"synth:minhash:{namespace}:{digest}"
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.client = redis.Redis.from_url(
            config.redis_url, socket_timeout=5, socket_connect_timeout=3, retry=Retry(NoBackoff(), 1)
        )
        self.ids: list[str] = []  # ids seen in answers, so `duplicates` can refer to them by position
        self._staged: list[str] = []  # ids added since the last commit
        with self.reachable():
            self.client.ping()

    @contextmanager
    def reachable(self) -> Iterator[None]:
        """Turn a Redis failure into one error naming the URL."""
        import redis

        try:
            yield
        except redis.RedisError as e:
            raise RedisUnavailableError(f"Redis at {self.config.redis_url} is not reachable: {e}") from None

    def commit(self) -> None:
        self._staged.clear()

    def rollback(self) -> None:
        """Take the records of a batch that was not committed out of the shared index."""
        staged, self._staged = self._staged, []
        self.remove(staged)

    @classmethod
    def open(cls, dataset: str | Path | None, config: MinHashConfig) -> RedisMinHashIndex:
        """The shared index for `dataset`; filled from its shards the first time it is used."""
        index = cls(config, namespace_for(dataset, config))
        with index.locked():
            if not index.client.exists(f"{index.ns}:meta"):
                if dataset is not None and (Path(dataset) / MANIFEST).is_file():
                    frame = scan(dataset).select("id", "instruction", "input", "output").collect()
                    if frame.height:
                        index.add(frame["id"].to_list(), sign(frame_texts(frame), config), remember=False)
                index.client.hset(f"{index.ns}:meta", mapping={"params": json.dumps(index.params)})
        return index

    def __len__(self) -> int:
        with self.reachable():
            return int(self.client.hlen(f"{self.ns}:sig"))

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the index's lock: check-then-insert of a batch happens as one step across workers."""
        with self.reachable(), self.client.lock(f"{self.ns}:lock", timeout=300, blocking_timeout=600):
            yield

    @property
    def measure(self) -> str:
        return measure_name(self.config)

    def contains(self, ids: Sequence[str]) -> list[bool]:
        """Whether each id is indexed already."""
        if not ids:
            return []
        with self.reachable():
            return [raw is not None for raw in self.client.hmget(f"{self.ns}:sh", list(ids))]

    def remove(self, ids: Sequence[str]) -> None:
        """Take records out of the index (records that were kept but will never be committed)."""
        if not ids:
            return
        with self.reachable():
            self._remove(ids)

    def _remove(self, ids: Sequence[str]) -> None:
        stored = self.client.hmget(f"{self.ns}:sig", list(ids))
        pipe = self.client.pipeline(transaction=True)
        for rid, raw in zip(ids, stored, strict=True):
            if raw is None:
                continue
            sig = np.frombuffer(raw if isinstance(raw, bytes) else raw.encode(), dtype="<u4").astype(np.uint32)[None, :]
            for key in SignedBatch(sig, np.empty(0, np.uint32), np.zeros(2, np.int64)).keys(self.bands, self.rows)[0]:
                pipe.srem(f"{self.ns}:b:{int(key):x}", rid)
            pipe.hdel(f"{self.ns}:sig", rid)
            pipe.hdel(f"{self.ns}:sh", rid)
        pipe.execute()

    def add(self, ids: Sequence[str], batch: SignedBatch, remember: bool = True) -> None:
        with self.reachable():
            self._add(ids, batch)
        if remember:
            self._staged.extend(ids)

    def drop(self) -> None:
        """Delete the whole shared index (it is rebuilt from the dataset's shards on next use)."""
        with self.reachable():
            keys = list(self.client.scan_iter(match=f"{self.ns}:*", count=1000))
            for start in range(0, len(keys), 1000):
                self.client.delete(*keys[start : start + 1000])

    def _add(self, ids: Sequence[str], batch: SignedBatch) -> None:
        keys = batch.keys(self.bands, self.rows)
        pipe = self.client.pipeline(transaction=True)
        for i, (rid, row) in enumerate(zip(ids, keys, strict=True)):
            for key in row:
                pipe.sadd(f"{self.ns}:b:{int(key):x}", rid)
            pipe.hset(f"{self.ns}:sig", rid, batch.sigs[i].astype("<u4").tobytes())
            pipe.hset(f"{self.ns}:sh", rid, batch.shingle_set(i).astype("<u4").tobytes())
        pipe.execute()

    def duplicates(self, batch: SignedBatch) -> list[tuple[int, float] | None]:
        """As `MinHashIndex.duplicates`; an indexed match is reported by its position in `self.ids`."""
        with self.reachable():
            return self._duplicates(batch)

    def _duplicates(self, batch: SignedBatch) -> list[tuple[int, float] | None]:
        keys = batch.keys(self.bands, self.rows)
        pipe = self.client.pipeline(transaction=False)
        for row in keys:
            for key in row:
                pipe.smembers(f"{self.ns}:b:{int(key):x}")
        answers = pipe.execute()
        candidates: list[set[str]] = []
        for i in range(len(batch)):
            found: set[str] = set()
            for members in answers[i * self.bands : (i + 1) * self.bands]:
                found.update(m.decode() for m in members)
            candidates.append(found)
        wanted = sorted(set().union(*candidates)) if candidates else []
        sigs, sets = {}, {}
        if wanted:
            pipe = self.client.pipeline(transaction=False)
            pipe.hmget(f"{self.ns}:sig", wanted)
            pipe.hmget(f"{self.ns}:sh", wanted)
            raw_sigs, raw_sets = pipe.execute()
            sigs = {rid: raw for rid, raw in zip(wanted, raw_sigs, strict=True) if raw is not None}
            sets = {rid: raw for rid, raw in zip(wanted, raw_sets, strict=True) if raw is not None}
        match = np.full(len(batch), lsh_kernels.NO_MATCH, dtype=np.int64)
        score = np.zeros(len(batch), dtype=np.float64)
        for i, found in enumerate(candidates):
            best: tuple[str, float] | None = None
            for rid in sorted(found):
                if rid not in sigs or rid not in sets:
                    continue
                sim = similarity(
                    self.config,
                    batch.sigs[i],
                    np.frombuffer(sigs[rid], dtype="<u4"),
                    batch.shingle_set(i),
                    np.frombuffer(sets[rid], dtype="<u4").astype(np.uint32),
                )
                if sim >= self.config.threshold and (best is None or sim > best[1]):
                    best = (rid, sim)
            if best is not None:
                self.ids.append(best[0])
                match[i], score[i] = len(self.ids) - 1, best[1]
        within_batch(batch, self.bands, self.rows, self.config, match, score)
        return matches(match, score)

    def sync(self, dataset: str | Path) -> None:
        """Nothing to do: kept records entered Redis when the filter kept them."""
