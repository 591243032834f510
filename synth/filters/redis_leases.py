"""The lease and heartbeat machinery of the Redis MinHash index's staged batches: a mixin that
`RedisMinHashIndex` inherits (`synth.filters.redis_index`).

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

import logging
import secrets
import threading
import time
import weakref
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from synth.filters.minhash import SignedBatch
from synth.filters.redis_log import _SETTLE, _SHA, RedisUnavailableError

if TYPE_CHECKING:
    import redis

# How long a writer's staged batches outlive its last heartbeat (renewed every third of it). Long
# enough for Redis round trips under load, short enough that a dead writer's batch soon leaves.
_LEASE_MS = 30_000
_REAP_S = 1.0  # a writer looks for expired leases at most this often

# The index's logger: these warnings are the index's.
_log = logging.getLogger("synth.filters.redis_index")


class StagedBatches:
    """This writer's staged batches, their outcomes and its lease, for `RedisMinHashIndex`."""

    # What the index provides.
    client: redis.Redis
    ns: str
    keys: list[str]
    _mutex: threading.RLock
    _pending: dict[str, list[str]]

    if TYPE_CHECKING:

        def reachable(self) -> AbstractContextManager[None]: ...

        def _put(self, ids: Sequence[str], batch: SignedBatch, staged: bool) -> None: ...

    def __init__(self) -> None:
        """The lease state; the index calls this once `ns` is set."""
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

    def _start_heartbeat(self) -> None:
        if self._beating:
            return
        self._beating = True
        # A weak reference: the thread ends with the index instead of keeping it alive.
        threading.Thread(target=_heartbeat, args=(weakref.ref(self),), daemon=True, name=f"lease-{self.token}").start()


def _heartbeat(ref: weakref.ref[StagedBatches]) -> None:
    """Renew an index's lease every third of it for as long as the index exists."""
    while True:
        time.sleep(_LEASE_MS / 3000)
        index = ref()
        if index is None:
            return
        index._beat()
        del index
