"""The MinHash index in Redis: a private redis-server on a free loopback port, two writers at once."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from synth.filters.dedup import NearDedupFilter
from synth.filters.redis_index import RedisMinHashIndex, RedisUnavailableError
from synth.schemas import Record
from synth.schemas.curation import MinHashConfig

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def redis_url(tmp_path) -> Iterator[str]:
    port = free_port()
    server = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    server.terminate()
    server.wait(timeout=10)


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
