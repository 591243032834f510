"""The MinHash index in Redis, shared by every worker and machine that writes one dataset.

The log's layout, its scripts and the encoding of its entries are in `redis_log`; the leases of
staged batches, and their heartbeat, in `redis_leases` (a mixin this index inherits).

Each process replays the log into an in-memory `MinHashIndex` (its mirror) and checks a batch
there, with the local index's own code, so the verdicts are the local index's. The batch's kept
records are then appended by a server-side script only if the log is still as long as the mirror
(compare-and-append, atomic in Redis): when another writer got in first, the new entries are
replayed and, if they share a band key with the batch (or removed records), the batch is checked
again. So no lock is held, and two writers can never both keep a near-duplicate pair. A batch
costs three round trips whatever its size; Redis keeps 4 bytes per shingle (or signature value)
and per band plus the id of each record and does no work per record, while each writer holds a
mirror as large as a local index.

A Redis that cannot be reached is an error naming its URL; it is not retried for minutes (socket
timeouts are a few seconds, and Redis errors are not transient for the batch retry). A batch's
records enter the index when the filter keeps them and leave it again (`rollback`) when the
batch is not committed; removed records stay in the log until the index is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np

from synth.filters import redis_leases
from synth.filters.dedup import IndexMismatchError, MinHashIndex
from synth.filters.minhash import SignedBatch, banding, frame_texts, measure_name, sign, signature_params
from synth.filters.redis_leases import StagedBatches
from synth.filters.redis_log import _APPEND, RedisUnavailableError, _split_ids, _words
from synth.schemas.curation import MinHashConfig
from synth.shards.layout import is_dataset
from synth.shards.read import kept_frames

LAYOUT = "log-v3"
# The layout this one extends (its entries are ours without tags): upgraded in place on open.
_UPGRADES = {"log-v2"}
_ENTRY = 4096  # records per log entry (about 0.5 MiB with word 3-grams)
_PAGE = 32  # log entries read per round trip
_TRIES = 1000  # compare-and-append attempts before giving up on a batch
_FILL = 50_000  # dataset records signed at a time when an index is filled from the shards
_LOW32 = np.uint64(0xFFFFFFFF)


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


class RedisMinHashIndex(StagedBatches):
    def __init__(self, config: MinHashConfig, namespace: str) -> None:
        import redis

        self.config = config
        self.bands, self.rows = banding(config.threshold, config.num_perm)
        self.params = signature_params(config)
        digest = hashlib.sha256(json.dumps(self.params, sort_keys=True).encode()).hexdigest()[:10]
        self.ns = f"synth:minhash:{namespace}:{digest}"
        self.keys = [f"{self.ns}:log", f"{self.ns}:epoch"]
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.client = redis.Redis.from_url(
            config.redis_url, socket_timeout=5, socket_connect_timeout=3, retry=Retry(NoBackoff(), 1)
        )
        self.ids: list[str] = []  # ids seen in answers, so `duplicates` can refer to them by position
        self._mutex = threading.RLock()  # one caller at a time per object (the mirror is not shared)
        super().__init__()  # this writer's staged batches (`redis_leases`)
        self._reset()
        # Under `locked()`, `contains` names the batch's fresh records (`_batch`); `duplicates`
        # appends those it keeps (`_claimed`) and `add` takes them over.
        self._in_batch = False
        self._batch: list[str] | None = None
        self._claimed: list[str] = []
        with self.reachable():
            self.client.ping()

    def _reset(self) -> None:
        """An empty mirror, as if no entry of the log had been replayed."""
        self._mirror = MinHashIndex(self.config)
        self._frags: list[np.ndarray] = []  # band key fragments of the mirror's rows, in order
        self._pos = 0  # log entries replayed
        self._epoch = b""
        self._pending: dict[str, list[str]] = {}  # tag of a batch not yet settled -> the ids it added
        self._owner: dict[str, str] = {}  # id of a pending record -> its batch's tag

    @contextmanager
    def reachable(self) -> Iterator[None]:
        """Turn a Redis failure into one error naming the URL."""
        import redis

        try:
            yield
        except redis.RedisError as e:
            raise RedisUnavailableError(f"Redis at {self.config.redis_url} is not reachable: {e}") from None

    @classmethod
    def open(cls, dataset: str | Path | None, config: MinHashConfig) -> RedisMinHashIndex:
        """The shared index for `dataset`; filled from its shards the first time it is used (by
        one writer, under a short lock); an index of another layout is refused."""
        index = cls(config, namespace_for(dataset, config))
        with index.reachable():
            if index._checked_meta():
                return index
            with index.client.lock(f"{index.ns}:lock", timeout=600, blocking_timeout=900):
                if not index._checked_meta():
                    if is_dataset(dataset):
                        for frame in kept_frames(Path(dataset), ["id", "instruction", "input", "output"]):
                            for part in frame.iter_slices(_FILL):
                                index.add(part["id"].to_list(), sign(frame_texts(part), config), remember=False)
                    meta: dict[Any, Any] = {
                        "params": json.dumps(index.params),
                        "layout": LAYOUT,
                    }
                    index.client.hset(f"{index.ns}:meta", mapping=meta)
        return index

    def _checked_meta(self) -> bool:
        """Whether the index was filled already; raises if it was with another layout."""
        meta = self.client.hgetall(f"{self.ns}:meta")
        if not meta and not self.client.exists(f"{self.ns}:sig"):  # `:sig`: the first layout's
            return False
        raw = meta.get(b"layout", b"v1 (a hash field per record and a set per band)")
        layout = raw.decode() if isinstance(raw, bytes) else str(raw)
        if layout in _UPGRADES:  # readable as it is; older writers are refused from now on
            self.client.hset(f"{self.ns}:meta", "layout", LAYOUT)
            return True
        if layout != LAYOUT:
            raise IndexMismatchError(
                f"the Redis MinHash index {self.ns} at {self.config.redis_url} has the layout {layout}, this "
                f"version reads {LAYOUT}; rebuild it (`synth curate DIR --rebuild-index`)"
            )
        return True

    def __len__(self) -> int:
        with self._mutex, self.reachable():
            self._sync()
            return len(self._mirror)

    @contextmanager
    def locked(self) -> Iterator[None]:
        """A batch's check-then-insert. Nothing is locked in Redis (see the module); within this
        object one batch runs at a time, and records `duplicates` appended that `add` never took
        over leave the index again."""
        with self._mutex:
            outer, self._in_batch = self._in_batch, True
            try:
                yield
            except BaseException:
                with suppress(RedisUnavailableError):  # the error in flight says more
                    self._end_batch(outer)
                raise
            self._end_batch(outer)

    def _end_batch(self, outer: bool) -> None:
        self._in_batch, self._batch = outer, None
        unclaimed, self._claimed = self._claimed, []
        self.remove(unclaimed)

    @property
    def measure(self) -> str:
        return measure_name(self.config)

    def contains(self, ids: Sequence[str]) -> list[bool]:
        """Whether each id is indexed already. Under `locked()`, the others are the ids of the
        batch `duplicates` is given next, which lets it append the ones it keeps right away."""
        if not len(ids):
            return []
        with self._mutex, self.reachable():
            self._sync()
            known = self._mirror.contains(ids)
        if self._in_batch:
            self._batch = [i for i, seen in zip(ids, known, strict=True) if not seen]
        return known

    def remove(self, ids: Sequence[str]) -> None:
        """Take records out of the index (records that were kept but will never be committed)."""
        if not len(ids):
            return
        entries = []
        for lo in range(0, len(ids), _ENTRY):
            encoded = [i.encode() for i in ids[lo : lo + _ENTRY]]
            entries.append(b"D" + _words([len(encoded)], [len(e) for e in encoded]) + b"".join(encoded))
        with self._mutex, self.reachable():
            self.client.rpush(self.keys[0], *entries)

    def add(self, ids: Sequence[str], batch: SignedBatch, remember: bool = True) -> None:
        """Index records (those `duplicates` appended already are only taken over); with
        `remember`, as the staged batch's (committed records, from the shards, without)."""
        with self._mutex:
            claimed, self._claimed = set(self._claimed), []
            todo = [k for k, rid in enumerate(ids) if rid not in claimed]
            if todo:
                with self.reachable():
                    self._put(
                        [ids[k] for k in todo], batch if len(todo) == len(ids) else batch.take(todo), staged=remember
                    )
            self.remove(sorted(claimed.difference(ids)))

    def drop(self) -> None:
        """Delete the whole shared index (it is rebuilt from the dataset's shards on next use)."""
        with self._mutex, self.reachable():
            keys = list(self.client.scan_iter(match=f"{self.ns}:*", count=1000))
            for start in range(0, len(keys), 1000):
                self.client.unlink(*keys[start : start + 1000])
            self._reset()

    def duplicates(self, batch: SignedBatch) -> list[tuple[int, float] | None]:
        """As `MinHashIndex.duplicates`; an indexed match is reported by its position in `self.ids`.
        Right after `contains` under `locked()`, the records that match nothing are appended in
        the same step, atomically with respect to every other writer."""
        with self._mutex:
            ids, self._batch = self._batch, None
            if not len(batch):
                return []
            claim = ids is not None and len(ids) == len(batch)
            mine = (batch.keys(self.bands, self.rows) & _LOW32).astype(np.uint32)
            found: list[tuple[int, float] | None] | None = None
            answer: list[str | None] = []  # the id of each indexed match
            with self.reachable():
                for _ in range(_TRIES):
                    added, removed = self._sync()
                    if found is None or removed or np.isin(mine, added).any():
                        found = self._mirror.duplicates(batch)
                        answer = [None if d is None or d[0] < 0 else self._mirror.ids[d[0]] for d in found]
                    keep = [i for i, dup in enumerate(found) if dup is None]
                    if (
                        not claim
                        or ids is None
                        or not keep
                        or self._append([ids[i] for i in keep], batch.take(keep), staged=True)
                    ):
                        break
                else:
                    raise RuntimeError(f"{self.ns}: other writers kept appending; gave up after {_TRIES} tries")
            out: list[tuple[int, float] | None] = []
            for dup, other in zip(found, answer, strict=True):
                if other is not None and dup is not None:
                    self.ids.append(other)
                    dup = (len(self.ids) - 1, dup[1])
                out.append(dup)
            if claim and ids is not None:
                self._claimed = [ids[i] for i in keep]
            return out

    def _put(self, ids: Sequence[str], batch: SignedBatch, staged: bool) -> None:
        """Append records without checking them, but never an id that is indexed already."""
        for _ in range(_TRIES):
            self._sync()
            known, seen, keep = self._mirror.contains(ids), set(), []
            for k, (rid, indexed) in enumerate(zip(ids, known, strict=True)):
                if not indexed and rid not in seen:
                    seen.add(rid)
                    keep.append(k)
            if not keep or self._append([ids[k] for k in keep], batch.take(keep), staged):
                return
        raise RuntimeError(f"{self.ns}: other writers kept appending; gave up after {_TRIES} tries")

    def _append(self, ids: Sequence[str], batch: SignedBatch, staged: bool) -> bool:
        """Append the records if the log is still what the mirror replayed (then replay them too);
        `staged`: as the staged batch's, under this writer's lease."""
        tag = self._stage_tag() if staged else None
        entries = [self._encode(ids[lo : lo + _ENTRY], batch, lo, tag) for lo in range(0, len(ids), _ENTRY)]
        token = self._epoch or secrets.token_hex(8).encode()
        args: list[Any] = [self._pos, self._epoch, token, redis_leases._LEASE_MS if staged else "", *entries]
        if not self._run(_APPEND, [*self.keys, self._lease], args):
            return False
        self._epoch = token
        for entry in entries:
            self._replay(entry)
        if staged:
            self._held.append((list(ids), batch))
            self._start_heartbeat()
        return True

    def _encode(self, ids: Sequence[str], batch: SignedBatch, lo: int, tag: str | None = None) -> bytes:
        """An add entry of records lo.. of the batch (as many as `ids`), staged under `tag`."""
        hi = lo + len(ids)
        frags = batch.keys(self.bands, self.rows)[lo:hi] & _LOW32
        if self.config.verify == "exact":
            counts, values = np.diff(batch.offsets[lo : hi + 1]), batch.shingles[batch.offsets[lo] : batch.offsets[hi]]
        else:
            counts, values = np.full(len(ids), self.config.num_perm), batch.sigs[lo:hi]
        encoded = [i.encode() for i in ids]
        head = b"A" if tag is None else b"T" + _words([len(tag.encode())]) + tag.encode()
        return head + _words([len(ids)], counts, [len(e) for e in encoded], frags, values) + b"".join(encoded)

    def _sync(self) -> tuple[np.ndarray, bool]:
        """Replay the log's entries the mirror has not seen; returns the band key fragments they
        added and whether they removed indexed records. A log of another epoch (dropped and
        rebuilt) is replayed from its start."""
        added, removed = [np.empty(0, np.uint32)], False
        if self._marks:  # this writer's outcomes go first: a retried batch must not meet its own records
            self._deliver()
        while True:
            pipe = self.client.pipeline(transaction=True)  # the epoch and the entries of one log
            pipe.get(self.keys[1])
            pipe.lrange(self.keys[0], self._pos, self._pos + _PAGE - 1)
            epoch, entries = pipe.execute()
            if (epoch or b"") != self._epoch:
                if self._pos:
                    self._reset()
                    removed = True
                    continue
                self._epoch = epoch or b""
            for entry in entries:
                frags, gone = self._replay(entry)
                added.append(frags)
                removed |= gone
            if len(entries) < _PAGE:
                if self._reap():
                    continue
                return np.concatenate(added), removed

    def _replay(self, entry: bytes) -> tuple[np.ndarray, bool]:
        """Apply one log entry to the mirror; returns (fragments added, whether records left)."""
        self._pos += 1
        kind, none = entry[:1], np.empty(0, np.uint32)
        if kind in (b"C", b"X"):
            tag = entry[1:].decode()
            ids = self._pending.pop(tag, [])
            # Only what the tag still owns: an id removed since may have been staged again by another.
            mine = [rid for rid in ids if self._owner.get(rid) == tag]
            for rid in mine:
                del self._owner[rid]
            return none, kind == b"X" and self._forget(mine)
        n = int(np.frombuffer(entry, "<u4", 1, 1)[0])
        if kind == b"D":
            lengths = np.frombuffer(entry, "<u4", n, 5)
            ids = _split_ids(entry[5 + 4 * n :], lengths)
            for rid in ids:
                self._owner.pop(rid, None)
            return none, self._forget(ids)
        staged_as, base = None, 1
        if kind == b"T":
            staged_as = entry[5 : 5 + n].decode()
            base = 5 + n
            n = int(np.frombuffer(entry, "<u4", 1, base)[0])
        head = np.frombuffer(entry, "<u4", 2 * n, base + 4).astype(np.int64)
        counts, lengths, at = head[:n], head[n:], base + 4 + 8 * n
        frags = np.frombuffer(entry, "<u4", n * self.bands, at).reshape(n, self.bands)
        at += 4 * n * self.bands
        values = np.frombuffer(entry, "<u4", int(counts.sum()), at).astype(np.uint32, copy=False)
        ids = _split_ids(entry[at + 4 * int(counts.sum()) :], lengths)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        keys = {(self.bands, self.rows): frags.astype(np.uint64)}  # what the band table needs of them
        if self.config.verify == "exact":
            batch = SignedBatch(np.empty((n, 0), np.uint32), values, offsets, keys)
        else:
            batch = SignedBatch(values.reshape(n, -1), np.empty(0, np.uint32), np.zeros(n + 1, np.int64), keys)
        self._mirror.add(ids, batch, remember=False)
        self._frags.append(np.array(frags))
        if staged_as is not None:
            self._pending.setdefault(staged_as, []).extend(ids)
            self._owner.update(dict.fromkeys(ids, staged_as))
        return frags.ravel(), False

    def _forget(self, ids: Sequence[str]) -> bool:
        """Take records out of the mirror (its band table is rebuilt without them)."""
        gone = {rid for rid, known in zip(ids, self._mirror.contains(ids), strict=True) if known}
        if not gone:
            return False
        old = self._mirror
        live = [row for row, rid in enumerate(old.ids) if rid not in gone]
        frags = np.concatenate(self._frags)[live]
        rows = old.rows_of(live)
        batch = SignedBatch(rows.sigs, rows.shingles, rows.offsets, {(self.bands, self.rows): frags.astype(np.uint64)})
        self._mirror = MinHashIndex(self.config)
        self._mirror.add([old.ids[row] for row in live], batch, remember=False)
        self._frags = [frags]
        return True

    def sync(self, dataset: str | Path) -> None:
        """Nothing to do: kept records entered Redis when the filter kept them."""
