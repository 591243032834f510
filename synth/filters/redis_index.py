"""The MinHash index in Redis, shared by every worker and machine that writes one dataset.

Layout under `synth:minhash:{dataset}:{params hash}`: one set of record ids per LSH band key
(`:b:{key}`), the signatures in a hash (`:sig`), the parameters (`:meta`). A batch is checked and
inserted under one Redis lock, so two workers can never both keep near-duplicate records. All
commands of a batch go through pipelines; a Redis that cannot be reached is an error naming its
URL, raised before anything of the batch is written.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from synth.filters.minhash import (
    band_keys,
    banding,
    estimated_jaccard,
    frame_texts,
    mark_within_batch,
    signature_params,
    signatures,
)
from synth.schemas.curation import MinHashConfig
from synth.shards.store import MANIFEST, scan


class RedisUnavailableError(RuntimeError):
    """Redis did not answer; the message names the URL."""


class RedisMinHashIndex:
    def __init__(self, config: MinHashConfig, namespace: str) -> None:
        import redis

        self.config = config
        self.bands, self.rows = banding(config.threshold, config.num_perm)
        self.params = signature_params(config)
        digest = hashlib.sha256(json.dumps(self.params, sort_keys=True).encode()).hexdigest()[:10]
        self.ns = f"synth:minhash:{namespace}:{digest}"
        self.client = redis.Redis.from_url(config.redis_url, socket_timeout=10, socket_connect_timeout=5)
        self.ids: list[str] = []  # ids seen in answers, so `duplicates` can refer to them by position
        try:
            self.client.ping()
        except redis.RedisError as e:
            raise RedisUnavailableError(f"Redis at {config.redis_url} is not reachable: {e}") from None

    @classmethod
    def open(cls, dataset: str | Path | None, config: MinHashConfig) -> RedisMinHashIndex:
        """The shared index for `dataset`; filled from its shards the first time it is used."""
        name = Path(dataset).resolve().name if dataset is not None else "default"
        index = cls(config, name)
        with index.locked():
            if not index.client.exists(f"{index.ns}:meta"):
                if dataset is not None and (Path(dataset) / MANIFEST).is_file():
                    frame = scan(dataset).select("id", "instruction", "input", "output").collect()
                    if frame.height:
                        index.add(frame["id"].to_list(), signatures(frame_texts(frame), config))
                index.client.hset(f"{index.ns}:meta", mapping={"params": json.dumps(index.params)})
        return index

    def __len__(self) -> int:
        return int(self.client.hlen(f"{self.ns}:sig"))

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the index's lock: check-then-insert of a batch happens as one step across workers."""
        with self.client.lock(f"{self.ns}:lock", timeout=300, blocking_timeout=600):
            yield

    def add(self, ids: Sequence[str], sigs: np.ndarray, remember: bool = True) -> None:
        keys = band_keys(sigs, self.bands, self.rows)
        pipe = self.client.pipeline(transaction=True)
        for rid, row, sig in zip(ids, keys, sigs, strict=True):
            for key in row:
                pipe.sadd(f"{self.ns}:b:{int(key):x}", rid)
            pipe.hset(f"{self.ns}:sig", rid, sig.astype("<u4").tobytes())
        pipe.execute()

    def duplicates(self, sigs: np.ndarray) -> list[tuple[int, float] | None]:
        keys = band_keys(sigs, self.bands, self.rows)
        pipe = self.client.pipeline(transaction=False)
        for row in keys:
            for key in row:
                pipe.smembers(f"{self.ns}:b:{int(key):x}")
        answers = pipe.execute()
        candidates: list[set[str]] = []
        for i in range(len(sigs)):
            found: set[str] = set()
            for members in answers[i * self.bands : (i + 1) * self.bands]:
                found.update(m.decode() for m in members)
            candidates.append(found)
        wanted = sorted(set().union(*candidates)) if candidates else []
        stored = dict(zip(wanted, self.client.hmget(f"{self.ns}:sig", wanted), strict=True)) if wanted else {}
        out: list[tuple[int, float] | None] = [None] * len(sigs)
        for i, found in enumerate(candidates):
            best: tuple[str, float] | None = None
            for rid in sorted(found):
                raw = stored.get(rid)
                if raw is None:
                    continue
                stored_sig = np.frombuffer(raw if isinstance(raw, bytes) else raw.encode(), dtype="<u4")
                score = float(estimated_jaccard(sigs[i : i + 1], stored_sig[None, :])[0])
                if score >= self.config.threshold and (best is None or score > best[1]):
                    best = (rid, score)
            if best is not None:
                self.ids.append(best[0])
                out[i] = (len(self.ids) - 1, best[1])
        mark_within_batch(sigs, keys, out, self.config.threshold)
        return out

    def sync(self, dataset: str | Path) -> None:
        """Nothing to do: kept records entered Redis when the filter kept them."""
