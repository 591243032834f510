"""The MinHash index in Redis, shared by every worker and machine that writes one dataset.

Layout "log-v2" under `synth:minhash:{namespace}:{params hash}`, where the namespace is the
dataset's id from its manifest (or `minhash.namespace`, to share one index between datasets on
purpose):
- `:log`, a list of packed binary entries, appended to and never rewritten. An add entry holds
  records: per record its number of values and the length of its id, its band keys' low 32 bits
  (what the local index compares too), its shingle set (`verify: exact`) or signature
  (`estimate`), as little-endian uint32, then the ids; a staged add entry (`T`) is an add entry
  behind its batch's tag. A remove entry holds ids; a commit (`C`) or drop (`X`) entry, a tag.
- `:epoch`, a token made with the log's first entry (a dropped and rebuilt log has another);
  `:meta`, the parameters and the layout (an index of another layout is refused by `open`).

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

Staged batches (layout "log-v3"). A batch's records must be visible to other writers from the
moment they are kept (or two writers could both keep a near-duplicate pair), yet the batch may
never commit: its writer is killed, or Redis dies before the rollback reaches it. So a kept
batch is appended as a tagged entry (`T`: writer token, run, batch, sequence) and stays pending
until a `C` entry (committed) or an `X` entry (dropped) for its tag follows. While pending, its
writer holds a lease (`:live:{token}`, set by the append itself and renewed by a heartbeat
thread); any writer that replays a pending tag whose lease has expired appends its `X` entry, so
the ids of a batch that never committed leave every writer's view and no record is rejected as
a near copy of a record no dataset holds. `:tags` records each tag's outcome, so that a commit
and a drop of one tag exclude each other (scripts, atomic in Redis). A commit or rollback that
cannot reach Redis is delivered when it answers again (the heartbeat keeps trying, and so does
every later call); should the owner's lease run out first (Redis was down longer than a
lease) and another writer drop the batch, the owner appends the committed records again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np

from synth.filters.dedup import IndexMismatchError, MinHashIndex
from synth.filters.minhash import SignedBatch, banding, frame_texts, measure_name, sign, signature_params
from synth.schemas.curation import MinHashConfig
from synth.shards.layout import MANIFEST
from synth.shards.read import scan

LAYOUT = "log-v3"
# The layout this one extends (its entries are ours without tags): upgraded in place on open.
_UPGRADES = {"log-v2"}
_ENTRY = 4096  # records per log entry (about 0.5 MiB with word 3-grams)
_PAGE = 32  # log entries read per round trip
_TRIES = 1000  # compare-and-append attempts before giving up on a batch
_FILL = 50_000  # dataset records signed at a time when an index is filled from the shards
_LOW32 = np.uint64(0xFFFFFFFF)
# How long a writer's staged batches outlive its last heartbeat (renewed every third of it). Long
# enough for Redis round trips under load, short enough that a dead writer's batch soon leaves.
_LEASE_MS = 30_000
_REAP_S = 1.0  # a writer looks for expired leases at most this often

_log = logging.getLogger(__name__)

# KEYS: log, epoch, the writer's lease. ARGV: the log length the caller has replayed, the epoch it
# saw ("" if none), an epoch to set if there is none, the lease in ms ("" for committed records),
# then the entries. Appends them only if the log is unchanged; staged entries take the lease in
# the same step, so no pending tag is ever without one.
_APPEND = """
local epoch = redis.call('GET', KEYS[2])
if (epoch or '') ~= ARGV[2] or redis.call('LLEN', KEYS[1]) ~= tonumber(ARGV[1]) then return 0 end
if not epoch then redis.call('SET', KEYS[2], ARGV[3]) end
if ARGV[4] ~= '' then redis.call('SET', KEYS[3], '1', 'PX', tonumber(ARGV[4])) end
redis.call('RPUSH', KEYS[1], unpack(ARGV, 5))
return 1
"""
# KEYS: log, tags, the owner's lease ("" to skip the check). ARGV: the tag, its outcome
# ("committed" or "dropped"), its entry. Settles a tag once: returns the outcome it has.
_SETTLE = """
if KEYS[3] ~= '' and redis.call('EXISTS', KEYS[3]) == 1 then return false end
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 1 then
  redis.call('RPUSH', KEYS[1], ARGV[3])
  return ARGV[2]
end
return redis.call('HGET', KEYS[2], ARGV[1])
"""
_SHA = {script: hashlib.sha1(script.encode()).hexdigest() for script in (_APPEND, _SETTLE)}


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


def _words(*parts: Sequence[int] | np.ndarray) -> bytes:
    return np.concatenate([np.asarray(p, dtype=np.int64).ravel() for p in parts]).astype("<u4").tobytes()


def _tag_entry(kind: bytes, tag: str) -> bytes:
    return kind + tag.encode()


def _split_ids(blob: bytes, lengths: np.ndarray) -> list[str]:
    ends = np.cumsum(lengths).tolist()
    return [blob[a:b].decode() for a, b in zip([0, *ends[:-1]], ends, strict=True)]


class RedisMinHashIndex:
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
        # This writer's staged batches (see the module): its lease, the tag of the batch it is
        # staging (None until it appends one), what that batch appended (to append again, should
        # another writer drop it while this one stalled), and outcomes Redis has not heard yet.
        self.token = secrets.token_hex(8)
        self._lease = f"{self.ns}:live:{self.token}"
        self._label = "-|-"
        self._seq = 0
        self._tag: str | None = None
        self._held: list[tuple[list[str], SignedBatch]] = []
        self._marks: list[tuple[str, str, list[tuple[list[str], SignedBatch]]]] = []
        self._delivering = False
        self._beating = False
        self._reaped_at = 0.0
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

    def label(self, run_id: str, batch: int) -> None:
        """Name the run and batch of the records the filter stages next (their tag says it, so a
        dropped batch can be traced to its run)."""
        self._label = f"{run_id or '-'}|{batch}"

    def commit(self) -> None:
        """The staged batch is in its dataset: its records stay in the shared index for good."""
        self._settle("committed")

    def rollback(self) -> None:
        """Take the records of a batch that was not committed out of the shared index. Never
        raises for Redis: the error in flight says more, and the drop is delivered later (the
        lease runs out meanwhile if this process ends)."""
        self._settle("dropped")

    def _settle(self, outcome: str) -> None:
        with self._mutex:
            if self._tag is not None:
                self._marks.append((self._tag, outcome, self._held if outcome == "committed" else []))
                self._tag, self._held = None, []
            self._deliver(quiet=True)

    def _deliver(self, quiet: bool = False) -> None:
        """Tell Redis the outcomes of this writer's batches, oldest first (`quiet`: a Redis that
        does not answer leaves them for the heartbeat or the next call)."""
        if self._delivering:
            return
        self._delivering = True
        try:
            while self._marks:
                tag, outcome, held = self._marks[0]
                kind = b"C" if outcome == "committed" else b"X"
                try:
                    with self.reachable():
                        got = self._run(_SETTLE, [self.keys[0], self._tags, ""], [tag, outcome, kind + tag.encode()])
                        self._marks.pop(0)
                        if outcome == "committed" and got != b"committed":
                            # Dropped by another writer while this one could not renew its lease: the
                            # records are in the dataset, so they enter the index again, committed.
                            _log.warning("%s: batch %s outlived its lease; its records are indexed again", self.ns, tag)
                            for ids, batch in held:
                                self._put(ids, batch, staged=False)
                except RedisUnavailableError as e:
                    if not quiet:
                        raise
                    _log.warning("%s; the batch's outcome is delivered when Redis answers again", e)
                    return
        finally:
            self._delivering = False

    @property
    def _tags(self) -> str:
        return f"{self.ns}:tags"

    def _run(self, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run a script by its hash, sending it again if the server's cache was emptied (a restart,
        SCRIPT FLUSH)."""
        from redis.exceptions import NoScriptError

        try:
            return self.client.evalsha(_SHA[script], len(keys), *keys, *args)
        except NoScriptError:
            return self.client.eval(script, len(keys), *keys, *args)

    def _stage_tag(self) -> str:
        if self._tag is None:
            self._seq += 1
            self._tag = f"{self.token}|{self._label}|{self._seq}"
        return self._tag

    def _beat(self) -> None:
        """Renew the lease while a batch is staged or an outcome undelivered, and deliver those."""
        import redis

        if self._tag is None and not self._marks:
            return
        try:
            self.client.set(self._lease, b"1", px=_LEASE_MS)
        except redis.RedisError:
            return
        if self._marks and self._mutex.acquire(blocking=False):
            try:
                self._deliver(quiet=True)
            finally:
                self._mutex.release()

    def _reap(self) -> bool:
        """Drop the pending batches of writers whose lease ran out (at most every `_REAP_S`);
        whether any tag was settled, so that the caller replays what that appended."""
        others: dict[str, list[str]] = {}
        for tag in self._pending:
            token = tag.split("|", 1)[0]
            if token != self.token:
                others.setdefault(token, []).append(tag)
        if not others or time.monotonic() - self._reaped_at < _REAP_S:
            return False
        self._reaped_at = time.monotonic()
        tokens = list(others)
        pipe = self.client.pipeline(transaction=False)
        for token in tokens:
            pipe.exists(f"{self.ns}:live:{token}")
        settled = False
        for token, alive in zip(tokens, pipe.execute(), strict=True):
            if alive:
                continue
            lease = f"{self.ns}:live:{token}"
            for tag in others[token]:
                got = self._run(_SETTLE, [self.keys[0], self._tags, lease], [tag, "dropped", b"X" + tag.encode()])
                settled |= got is not None
                if got == b"dropped":
                    _log.warning("%s: dropped batch %s, staged by a writer that is gone", self.ns, tag)
        return settled

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
                    if dataset is not None and (Path(dataset) / MANIFEST).is_file():
                        frame = scan(dataset).select("id", "instruction", "input", "output").collect()
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
        args: list[Any] = [self._pos, self._epoch, token, _LEASE_MS if staged else "", *entries]
        if not self._run(_APPEND, [*self.keys, self._lease], args):
            return False
        self._epoch = token
        for entry in entries:
            self._replay(entry)
        if staged:
            self._held.append((list(ids), batch))
            self._start_heartbeat()
        return True

    def _start_heartbeat(self) -> None:
        if self._beating:
            return
        self._beating = True
        # A weak reference: the thread ends with the index instead of keeping it alive.
        threading.Thread(target=_heartbeat, args=(weakref.ref(self),), daemon=True, name=f"lease-{self.token}").start()

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


def _heartbeat(ref: weakref.ref[RedisMinHashIndex]) -> None:
    """Renew an index's lease every third of it for as long as the index exists."""
    while True:
        time.sleep(_LEASE_MS / 3000)
        index = ref()
        if index is None:
            return
        index._beat()
        del index
