"""The MinHash index in Redis: a private redis-server on a free loopback port, two writers at once."""

from __future__ import annotations

import shutil
import threading

import pytest

from synth.filters.dedup import NearDedupFilter
from synth.filters.redis_index import RedisMinHashIndex, RedisUnavailableError
from synth.schemas import Record
from synth.schemas.curation import MinHashConfig
from tests.conftest import free_port

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")


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
