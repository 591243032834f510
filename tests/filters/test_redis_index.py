"""The MinHash index in Redis: a private redis-server on a free loopback port, two writers at once.

Every test that needs the server fails without it (`make test` installs it): none is skipped."""

from __future__ import annotations

import gc
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from synth.filters import redis_index, redis_leases
from synth.filters.base import FilterChain
from synth.filters.dedup import IndexMismatchError, MinHashIndex, NearDedupFilter
from synth.filters.redis_index import RedisMinHashIndex
from synth.filters.redis_log import RedisUnavailableError
from synth.schemas import Record
from synth.schemas.curation import MinHashConfig
from tests.conftest import free_port, start_redis

ROOT = Path(__file__).parents[2]


def text(i: int, variant: str = "") -> str:
    return " ".join(f"t{i}w{k}" for k in range(40)) + variant


def rec(t: str) -> Record:
    return Record(generator="test", instruction=t, output="answer")


def test_two_writers_sharing_the_index_never_both_keep_a_near_duplicate(redis_url):
    config = MinHashConfig(backend="redis", redis_url=redis_url)
    a = RedisMinHashIndex(config, "shared")
    b = RedisMinHashIndex(config, "shared")
    # Each writer gets the same 60 topics in a different wording; batches race each other.
    batches_a = [[rec(text(i, " from a")) for i in range(k, k + 10)] for k in range(0, 60, 10)]
    batches_b = [[rec(text(i, " by b")) for i in range(k, k + 10)] for k in range(0, 60, 10)]
    kept: dict[str, list[Record]] = {"a": [], "b": []}

    def run(name: str, index: RedisMinHashIndex, batches: list[list[Record]]) -> None:
        f = NearDedupFilter(index)
        for batch in batches:
            kept[name] += f.apply(batch).kept

    threads = [
        threading.Thread(target=run, args=("a", a, batches_a)),
        threading.Thread(target=run, args=("b", b, batches_b)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    topics = [r.instruction.split("w0")[0] for r in kept["a"] + kept["b"]]
    assert len(topics) == 60 and len(set(topics)) == 60  # each topic kept exactly once, by one writer
    assert len(a) == 60


def test_the_shared_index_catches_duplicates_across_processes_and_restarts(redis_url):
    config = MinHashConfig(backend="redis", redis_url=redis_url)
    first = NearDedupFilter(RedisMinHashIndex(config, "ds"))
    assert len(first.apply([rec(text(1)), rec(text(2))]).kept) == 2
    later = NearDedupFilter(RedisMinHashIndex(config, "ds"))
    result = later.apply([rec(text(1, " again")), rec(text(3))])
    assert [r.instruction for r in result.kept] == [text(3)]
    assert result.rejects[0].reason == "near duplicate" and rec(text(1)).id in result.rejects[0].detail


def test_other_parameters_use_another_namespace(redis_url):
    NearDedupFilter(RedisMinHashIndex(MinHashConfig(backend="redis", redis_url=redis_url), "ds")).apply([rec(text(1))])
    other = RedisMinHashIndex(MinHashConfig(backend="redis", redis_url=redis_url, num_perm=64), "ds")
    assert len(other) == 0


def test_a_redis_that_is_down_is_a_clear_error():
    url = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(RedisUnavailableError, match=url):
        RedisMinHashIndex(MinHashConfig(backend="redis", redis_url=url), "ds")


def test_a_retried_batch_is_not_its_own_duplicate_and_removed_records_leave_the_index(redis_url):
    config = MinHashConfig(backend="redis", redis_url=redis_url)
    batch = [rec(text(1)), rec(text(2))]
    assert len(NearDedupFilter(RedisMinHashIndex(config, "retry")).apply(batch).kept) == 2
    # The same records again (a batch retried after its commit failed): kept, not counted twice.
    index = RedisMinHashIndex(config, "retry")
    assert len(NearDedupFilter(index).apply(batch).kept) == 2 and len(index) == 2
    # Taken out of the index, a record no longer blocks its near copies.
    index.remove([batch[0].id])
    assert len(index) == 1 and index.contains([batch[0].id, batch[1].id]) == [False, True]
    result = NearDedupFilter(index).apply([rec(text(1, " again")), rec(text(2, " again"))])
    assert [r.instruction for r in result.kept] == [text(1, " again")]


def near_copies(count: int, seed: int) -> list[str]:
    """`count` texts over a small vocabulary, about a third of them an earlier one with a word
    changed, at either end (most stay above the threshold) or anywhere (many fall below it)."""
    rng = random.Random(seed)
    words = [f"w{k}" for k in range(300)]
    texts: list[str] = []
    for _ in range(count):
        if texts and rng.random() < 0.35:
            tokens = rng.choice(texts).split()
            at = rng.choice([0, -1]) if rng.random() < 0.6 else rng.randrange(len(tokens))
            tokens[at] = rng.choice(words)
        else:
            tokens = rng.choices(words, k=rng.randint(12, 40))
        texts.append(" ".join(tokens))
    return texts


@pytest.mark.parametrize("verify", ["exact", "estimate"])
def test_the_same_verdicts_as_the_local_index(redis_url, verify):
    """Batch by batch through `NearDedupFilter`, the shared index keeps and rejects exactly what
    `MinHashIndex` does, with the same similarity and, for indexed matches, the same record."""
    config = MinHashConfig(backend="redis", redis_url=redis_url, verify=verify)
    records = [rec(t) for t in near_copies(400, seed=7)]
    results = {}
    for name, index in (("local", MinHashIndex(config)), ("redis", RedisMinHashIndex(config, "same"))):
        f = NearDedupFilter(index)
        results[name] = [f.apply(records[lo : lo + 50]) for lo in range(0, len(records), 50)]
    local, shared = results["local"], results["redis"]
    assert [r.id for res in shared for r in res.kept] == [r.id for res in local for r in res.kept]
    assert [(r.id, r.detail) for res in shared for r in res.rejects] == [
        (r.id, r.detail) for res in local for r in res.rejects
    ]
    assert sum(len(res.rejects) for res in local) > 50  # the data does hold near duplicates


def test_a_writer_that_loses_the_race_checks_its_batch_again(redis_url):
    """Between one writer's check and its append, another appends a near copy: the append is
    refused, the first writer replays the log, and its record becomes the duplicate."""
    config = MinHashConfig(backend="redis", redis_url=redis_url)
    slow, fast = RedisMinHashIndex(config, "race"), RedisMinHashIndex(config, "race")
    append = slow._append

    def overtaken(*args, **kwargs):
        slow._append = append
        assert len(NearDedupFilter(fast).apply([rec(text(5, " first"))]).kept) == 1
        return append(*args, **kwargs)

    slow._append = overtaken
    result = NearDedupFilter(slow).apply([rec(text(5, " second")), rec(text(6))])
    assert [r.instruction for r in result.kept] == [text(6)]
    assert rec(text(5, " first")).id in result.rejects[0].detail
    assert len(slow) == len(fast) == 2


def test_a_rolled_back_batch_leaves_every_writers_view(redis_url):
    config = MinHashConfig(backend="redis", redis_url=redis_url)
    a, b = RedisMinHashIndex(config, "undo"), RedisMinHashIndex(config, "undo")
    NearDedupFilter(a).apply([rec(text(1)), rec(text(2))])
    a.commit()
    NearDedupFilter(a).apply([rec(text(3))])
    assert len(b) == 3
    a.rollback()
    assert len(b) == 2 and b.contains([rec(text(3)).id]) == [False]
    assert len(NearDedupFilter(b).apply([rec(text(3, " again"))]).kept) == 1


def test_an_index_of_the_older_layout_is_refused_and_a_dropped_one_rebuilt(redis_url, tmp_path):
    config = MinHashConfig(backend="redis", redis_url=redis_url, namespace="old")
    index = RedisMinHashIndex(config, "old")
    index.client.hset(f"{index.ns}:sig", "some-id", b"\0" * 4)  # what the first layout stored
    with pytest.raises(IndexMismatchError, match="--rebuild-index"):
        RedisMinHashIndex.open(None, config)
    index.drop()
    assert len(RedisMinHashIndex.open(None, config)) == 0
    # A writer that replayed the log before it was dropped and refilled starts over.
    NearDedupFilter(index).apply([rec(text(1))])
    other = RedisMinHashIndex(config, "old")
    assert len(other) == 1
    index.drop()
    NearDedupFilter(index).apply([rec(text(2)), rec(text(3))])
    assert len(other) == 2 and other.contains([rec(text(1)).id]) == [False]


def test_a_flushed_script_cache_is_loaded_again_and_storage_is_packed(redis_url):
    config = MinHashConfig(backend="redis", redis_url=redis_url)
    index = RedisMinHashIndex(config, "packed")
    index.client.script_flush()
    batch = [rec(f"{text(i)} {i}") for i in range(200)]
    assert len(NearDedupFilter(index).apply(batch).kept) == 200
    # The log holds each record in a few hundred bytes, whatever its number of shingles.
    assert index.client.memory_usage(index.keys[0], samples=0) / len(index) < 400


# -- batches that never commit ---------------------------------------------------------------------

# Redis keeps its data on disk, so that a restart brings the log back as a real deployment would.
PERSISTENT = ("--appendonly", "yes", "--appendfsync", "always")


def until(check, seconds: float = 15.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def staged_by(run_id: str, batch: int, t: str) -> Record:
    return Record(generator="test", instruction=t, output="answer", run_id=run_id, batch=batch)


@pytest.fixture
def short_leases(monkeypatch):
    monkeypatch.setattr(redis_leases, "_LEASE_MS", 1500)
    monkeypatch.setattr(redis_leases, "_REAP_S", 0.0)


def test_a_batch_whose_writer_was_killed_before_its_commit_leaves_the_index(redis_url, short_leases):
    """Writer A, in a process of its own, keeps a batch and is killed before committing it. Once
    its lease runs out, writer B (another dataset sharing the index) keeps a near copy of A's
    record instead of rejecting it as a duplicate of a record no dataset holds."""
    a_record = staged_by("a-run", 3, text(1))
    program = f"""
import time
from synth.filters import redis_index, redis_leases
redis_leases._LEASE_MS = 1500
from synth.filters.dedup import NearDedupFilter
from synth.schemas import Record
from synth.schemas.curation import MinHashConfig
index = redis_index.RedisMinHashIndex(MinHashConfig(backend="redis", redis_url={redis_url!r}), "shared")
record = Record(generator="test", instruction={a_record.instruction!r}, output="answer", run_id="a-run", batch=3)
kept = NearDedupFilter(index).apply([record]).kept
print(len(kept), flush=True)
time.sleep(600)
"""
    writer = subprocess.Popen([sys.executable, "-c", program], cwd=ROOT, stdout=subprocess.PIPE)
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == b"1"
        config = MinHashConfig(backend="redis", redis_url=redis_url)
        b = RedisMinHashIndex(config, "shared")
        time.sleep(1.0)  # beyond a heartbeat: a live writer's batch stays while it is in flight
        assert b.contains([a_record.id]) == [True]
    finally:
        writer.kill()
        writer.wait(timeout=10)
    assert until(lambda: not b.contains([a_record.id])[0])
    result = NearDedupFilter(b).apply([staged_by("b-run", 0, text(1, " again"))])
    assert [r.instruction for r in result.kept] == [text(1, " again")]
    outcomes = {k.decode(): v for k, v in b.client.hgetall(f"{b.ns}:tags").items()}
    assert [v for k, v in outcomes.items() if "|a-run|3|" in k] == [b"dropped"]  # the tag names run and batch
    assert len(RedisMinHashIndex(config, "shared")) == 1  # B's record alone, in a fresh writer's view too


@pytest.mark.parametrize("writer_lives", [True, False])
def test_redis_dying_between_a_batchs_insert_and_its_rollback_leaves_no_ghost(tmp_path, short_leases, writer_lives):
    """Redis dies after the batch's records entered it, before the failed batch could take them
    out. When Redis is back with its log, the records leave: the writer delivers the rollback
    it owes, or, if it is gone, its lease runs out and the next writer drops them."""
    port = free_port()
    server = start_redis(port, tmp_path, *PERSISTENT)
    config = MinHashConfig(backend="redis", redis_url=f"redis://127.0.0.1:{port}/0")
    try:
        a = RedisMinHashIndex(config, "shared")
        chain = FilterChain([NearDedupFilter(a)])
        assert len(chain.apply([staged_by("a-run", 0, text(1))]).kept) == 1
        server.kill()
        server.wait(timeout=10)
        chain.rollback()  # the batch failed; Redis is gone, and that is no new error
        if not writer_lives:
            del chain, a
            gc.collect()
        server = start_redis(port, tmp_path, *PERSISTENT)
        b = RedisMinHashIndex(config, "shared")
        assert until(lambda: len(b) == 0)
        result = NearDedupFilter(b).apply([staged_by("b-run", 0, text(1, " again"))])
        assert [r.instruction for r in result.kept] == [text(1, " again")]
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_a_committed_batch_stays_after_its_writer_and_its_lease_are_gone(tmp_path, short_leases):
    """A batch committed while Redis was down (its commit delivered later), and a batch
    committed normally: both stay indexed after their writer is gone, even if Redis was down
    longer than the lease and another writer met the batch first."""
    port = free_port()
    server = start_redis(port, tmp_path, *PERSISTENT)
    config = MinHashConfig(backend="redis", redis_url=f"redis://127.0.0.1:{port}/0")
    try:
        a = RedisMinHashIndex(config, "shared")
        chain = FilterChain([NearDedupFilter(a)])
        chain.apply([staged_by("a-run", 0, text(1))])
        chain.commit()
        chain.apply([staged_by("a-run", 1, text(2))])
        server.kill()
        server.wait(timeout=10)
        chain.commit()  # the dataset has the batch; Redis hears of it when it is back
        time.sleep(2.0)  # longer than the lease
        server = start_redis(port, tmp_path, *PERSISTENT)
        b = RedisMinHashIndex(config, "shared")
        owed = a._marks  # what A has yet to tell Redis
        assert until(lambda: not owed and len(b) == 2)
        del chain, a
        gc.collect()
        time.sleep(2.0)
        result = NearDedupFilter(b).apply([staged_by("b-run", 0, text(i, " again")) for i in (1, 2)])
        assert result.kept == [] and len(result.rejects) == 2
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_an_index_of_the_previous_log_layout_is_read_and_upgraded(redis_url):
    config = MinHashConfig(backend="redis", redis_url=redis_url, namespace="v2")
    index = RedisMinHashIndex.open(None, config)
    NearDedupFilter(index).apply([rec(text(1))])
    index.commit()
    index.client.hset(f"{index.ns}:meta", "layout", "log-v2")  # what the previous version wrote
    reopened = RedisMinHashIndex.open(None, config)
    assert len(reopened) == 1 and index.client.hget(f"{index.ns}:meta", "layout") == redis_index.LAYOUT.encode()
