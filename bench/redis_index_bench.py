"""Shared-index benchmark: `RedisMinHashIndex` against the local `MinHashIndex` on the same records.

1. One writer: both indexes get the same stream of `dedup_bench.InstructionStream` texts (about
   10% near and 0.5% verbatim copies), batch by batch, through the calls `NearDedupFilter.apply`
   makes: under `locked()`, `contains` of the batch's ids, `sign`, `duplicates`, `add` of the kept
   rows; then `commit`. `--repeats` rounds, alternating which index goes first; printed: each
   round's records per second, the median ratio, whether both kept exactly the same records, and
   the Redis memory per indexed record (`INFO memory` before and after, and `MEMORY USAGE` of the
   log).
2. Several writers: `--writers` processes share one Redis index, each taking every Nth batch of
   the same stream at once (they start together); printed: records per second over all of them,
   and a check that no two records they kept are near duplicates (all of them again through a
   fresh local index, which must keep every one).

Redis is a private `redis-server` on a free loopback port (nothing kept on disk) unless
`--redis-url` names one; the bench's keys there are dropped before and after.
Run: `.venv/bin/python bench/redis_index_bench.py` (`--help` for sizes). Asserts nothing on timings.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext

from dedup_bench import InstructionStream

from synth.filters.dedup import MinHashIndex
from synth.filters.minhash import Index, sign
from synth.filters.redis_index import RedisMinHashIndex
from synth.schemas.curation import MinHashConfig

RATIO_GOAL = 3.0


@contextmanager
def private_redis() -> Iterator[str]:
    """A redis-server of our own on a free loopback port; its URL."""
    import redis

    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not installed; pass --redis-url")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as folder:
        command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        server = subprocess.Popen([*command, "--dir", folder], stdout=subprocess.DEVNULL)
        try:
            client = redis.Redis(port=port)
            for _ in range(200):
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            server.terminate()
            server.wait(timeout=10)


def stream(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """(record texts, their ids): `record_text` of an instruction alone, and a content hash."""
    texts, _ = InstructionStream(seed=args.seed).batch(args.records)
    texts = ["\n".join((t, "", "")) for t in texts]
    return texts, [hashlib.sha256(t.encode()).hexdigest()[:20] for t in texts]


def feed(index: Index, texts: Sequence[str], ids: Sequence[str], starts: Sequence[int], size: int) -> set[str]:
    """`NearDedupFilter.apply`'s calls on the batches beginning at `starts`; the ids kept."""
    kept: set[str] = set()
    for lo in starts:
        part, part_ids = texts[lo : lo + size], ids[lo : lo + size]
        with index.locked():
            known = index.contains(part_ids)
            fresh = [k for k, seen in enumerate(known) if not seen]
            batch = sign([part[k] for k in fresh], index.config)
            found = index.duplicates(batch)
            keep = [i for i, dup in enumerate(found) if dup is None]
            index.add([part_ids[fresh[i]] for i in keep], batch.take(keep))
        index.commit()
        kept.update(part_ids[fresh[i]] for i in keep)
    return kept


def timed(index: Index, texts: Sequence[str], ids: Sequence[str], size: int) -> tuple[float, set[str]]:
    start = time.perf_counter()
    kept = feed(index, texts, ids, range(0, len(texts), size), size)
    return time.perf_counter() - start, kept


def one_writer(args: argparse.Namespace, config: MinHashConfig, texts: list[str], ids: list[str]) -> None:
    n = len(texts)
    feed(MinHashIndex(config), texts[:400], ids[:400], range(0, 400, 200), 200)  # kernels load untimed
    ratios, rates, kept = [], {"local": [], "redis": []}, {}
    for round_ in range(args.repeats):
        shared = RedisMinHashIndex(config, "bench")
        shared.drop()
        before = int(shared.client.info("memory")["used_memory"])
        order = [("local", MinHashIndex(config)), ("redis", shared)]
        for name, index in order if round_ % 2 == 0 else order[::-1]:
            seconds, kept[name] = timed(index, texts, ids, args.batch)
            rates[name].append(n / seconds)
        after = int(shared.client.info("memory")["used_memory"])
        log_bytes = int(shared.client.memory_usage(shared.keys[0], samples=0) or 0)
        start = time.perf_counter()
        indexed = len(RedisMinHashIndex(config, "bench"))  # a new writer replays the whole log
        replay = indexed / (time.perf_counter() - start)
        shared.drop()
        ratios.append(rates["local"][-1] / rates["redis"][-1])
        print(
            f"round {round_ + 1}: local {rates['local'][-1]:,.0f} rec/s, redis {rates['redis'][-1]:,.0f} rec/s, "
            f"local/redis {ratios[-1]:.2f}x",
            flush=True,
        )
    same = "the same records" if kept["local"] == kept["redis"] else f"{len(kept['local'] ^ kept['redis']):,} differ"
    print(
        f"one writer, {n:,} records in batches of {args.batch:,} (median of {args.repeats}): local "
        f"{statistics.median(rates['local']):,.0f} rec/s, redis {statistics.median(rates['redis']):,.0f} rec/s, "
        f"local/redis {statistics.median(ratios):.2f}x (goal <= {RATIO_GOAL:.0f}x); both kept {same}"
    )
    print(
        f"redis memory: {(after - before) / indexed:,.0f} bytes per indexed record (used_memory, {indexed:,} "
        f"records), the log {log_bytes / indexed:,.0f} (MEMORY USAGE); a new writer replays it at {replay:,.0f} rec/s",
        flush=True,
    )


def writer_child(args: argparse.Namespace) -> None:
    """Writer `args.writer` of `args.writers`: every Nth batch, once all writers are ready."""
    texts, ids = stream(args)
    index = RedisMinHashIndex(MinHashConfig(backend="redis", redis_url=args.redis_url, verify=args.verify), "many")
    feed(MinHashIndex(index.config), texts[:400], ids[:400], range(0, 400, 200), 200)
    index.client.incr("bench:ready")
    while int(index.client.get("bench:ready")) < args.writers:
        time.sleep(0.01)
    start = time.time()
    kept = feed(index, texts, ids, range(args.writer * args.batch, len(texts), args.writers * args.batch), args.batch)
    print(json.dumps({"start": start, "end": time.time(), "kept": sorted(kept)}))


def many_writers(args: argparse.Namespace, config: MinHashConfig, texts: list[str], ids: list[str]) -> None:
    index = RedisMinHashIndex(config, "many")
    index.drop()
    index.client.delete("bench:ready")
    command = [sys.executable, __file__, "--redis-url", config.redis_url, "--writers", str(args.writers)]
    command += ["--records", str(args.records), "--batch", str(args.batch), "--seed", str(args.seed)]
    command += ["--verify", args.verify]
    children = [subprocess.Popen([*command, "--writer", str(k)], stdout=subprocess.PIPE) for k in range(args.writers)]
    reports = [json.loads(child.communicate()[0].decode().strip().splitlines()[-1]) for child in children]
    seconds = max(r["end"] for r in reports) - min(r["start"] for r in reports)
    kept = [rid for r in reports for rid in r["kept"]]
    position = {rid: k for k, rid in enumerate(ids)}
    rows = sorted(position[rid] for rid in kept)
    again = feed(
        MinHashIndex(config), [texts[k] for k in rows], [ids[k] for k in rows], range(0, len(rows), 10_000), 10_000
    )
    print(
        f"{args.writers} writers on one redis index: {len(texts):,} records in {seconds:.2f} s = "
        f"{len(texts) / seconds:,.0f} rec/s over all; kept {len(kept):,} (index holds {len(index):,}); "
        f"near-duplicate pairs among them: {len(kept) - len(again):,}"
    )
    index.drop()
    index.client.delete("bench:ready")


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--records", type=int, default=50_000, help="records in the stream (default 50000)")
    p.add_argument("--batch", type=int, default=2_000, help="records per batch (default 2000)")
    p.add_argument("--repeats", type=int, default=3, help="one-writer rounds (default 3)")
    p.add_argument("--writers", type=int, default=2, help="concurrent writers in part 2, 0 to skip (default 2)")
    p.add_argument("--verify", choices=("exact", "estimate"), default="exact", help="minhash.verify (default exact)")
    p.add_argument("--seed", type=int, default=0, help="the stream's seed (default 0)")
    p.add_argument("--redis-url", help="a Redis to use instead of a private redis-server")
    p.add_argument("--writer", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if min(args.records, args.batch, args.repeats) < 1 or args.writers < 0:
        p.error("--records, --batch and --repeats must be at least 1, --writers at least 0")
    if args.writer is not None:
        writer_child(args)
        return
    with private_redis() if not args.redis_url else nullcontext(args.redis_url) as url:
        config = MinHashConfig(backend="redis", redis_url=url, verify=args.verify)
        texts, ids = stream(args)
        print(f"data: {len(texts):,} instructions; verify={args.verify}", flush=True)
        one_writer(args, config, texts, ids)
        if args.writers:
            many_writers(args, config, texts, ids)


if __name__ == "__main__":
    main()
