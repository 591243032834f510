"""Novelty benchmark: pruned against unpruned ROUGE-L novelty, on pools of growing size, in one process.

For each pool size, the same candidates are judged by `RougeNoveltyIndex.check(add=False)` with
pruning (the default) and without, on the same pool. Prints candidates/s, pairs/s (pairs a full
row would score, divided by the time: the rate at which the pool is covered), the pairs the
pruned path really scored, the ratio pruned/unpruned, whether every verdict, score and neighbour
agreed, and each path's peak traced memory (tracemalloc, in a separate smaller pass, since tracing
slows Python code down). It asserts nothing about timings.

Run: `.venv/bin/python bench/novelty_bench.py` (pools 10K and 100K), `--pools 10000 100000 1000000`
for 1M, `--help` for sizes.
"""

from __future__ import annotations

import argparse
import itertools
import random
import time
import tracemalloc
from collections.abc import Sequence

from synth.filters import NoveltyVerdict, RougeNoveltyIndex


def vocabulary(size: int, rng: random.Random) -> tuple[list[str], list[float]]:
    """Made-up words with Zipf-like cumulative weights, the commonest words first (as "the")."""
    words = sorted({"".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9))) for _ in range(size)})
    weights = list(itertools.accumulate(1.0 / (rank + 1) for rank in range(len(words))))
    return words, weights


def texts(n: int, rng: random.Random, words: list[str], cum: list[float], near: Sequence[str] = ()) -> list[str]:
    """`n` instructions of 5-25 words; about 15% are copies of a `near` text (or of an earlier one)
    with one to three words replaced, so some candidates score above the threshold."""
    out: list[str] = []
    for _ in range(n):
        source = near or out
        if source and rng.random() < 0.15:
            tokens = rng.choice(source).split()
            for _ in range(rng.randint(1, 3)):
                tokens[rng.randrange(len(tokens))] = rng.choices(words, cum_weights=cum)[0]
            out.append(" ".join(tokens))
        else:
            out.append(" ".join(rng.choices(words, cum_weights=cum, k=rng.randint(5, 25))))
    return out


def judge(index: RougeNoveltyIndex, candidates: list[str]) -> tuple[float, list[NoveltyVerdict]]:
    start = time.perf_counter()
    verdicts = index.check(candidates, add=False)
    return time.perf_counter() - start, verdicts


def agreement(pruned: list[NoveltyVerdict], full: list[NoveltyVerdict], floor: float) -> str:
    """What the pruned path must reproduce: every verdict, the best score when it is above the
    floor, and the neighbours (names and scores, in order) that score above the floor."""

    def above(v: NoveltyVerdict) -> list:
        return [(n, s) for n, s in zip(v.neighbors, v.neighbor_scores, strict=True) if s > floor]

    verdicts = all(p.kept == f.kept for p, f in zip(pruned, full, strict=True))
    best = all(p.max_score == f.max_score for p, f in zip(pruned, full, strict=True) if f.max_score > floor)
    neighbours = all(above(p) == above(f) for p, f in zip(pruned, full, strict=True))
    below = sum(p.neighbors != f.neighbors for p, f in zip(pruned, full, strict=True))
    yes = {True: "yes", False: "NO"}
    return (
        f"same verdicts: {yes[verdicts]}, best scores above {floor}: {yes[best]}, neighbours above {floor}:"
        f" {yes[neighbours]} ({below} of {len(full)} lists differ below it)"
    )


def peak_mib(index: RougeNoveltyIndex, candidates: list[str]) -> float:
    tracemalloc.start()
    index.check(candidates, add=False)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pools", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--candidates", type=int, default=512)
    parser.add_argument("--memory-candidates", type=int, default=64)
    parser.add_argument("--vocabulary", type=int, default=20_000)
    parser.add_argument("--threshold", type=float, default=0.7)
    parser.add_argument("--skip-unpruned-above", type=int, default=1_000_000, help="largest pool timed unpruned")
    args = parser.parse_args()

    rng = random.Random(0)
    words, cum = vocabulary(args.vocabulary, rng)
    pool = texts(max(args.pools), rng, words, cum)
    print(f"vocabulary {len(words)} words, pool texts 5-25 words, {args.candidates} candidates, t={args.threshold}")
    for size in sorted(args.pools):
        candidates = texts(args.candidates, random.Random(size), words, cum, near=pool[:size])
        pruned = RougeNoveltyIndex(threshold=args.threshold)
        start = time.perf_counter()
        pruned.add(pool[:size])
        build = time.perf_counter() - start
        before = pruned.search.scored
        t_pruned, v_pruned = judge(pruned, candidates)
        scored = pruned.search.scored - before
        pairs = size * args.candidates
        mem_pruned = peak_mib(pruned, candidates[: args.memory_candidates])
        kept = sum(v.kept for v in v_pruned)
        line = (
            f"pool {size:>9,}: pruned {args.candidates / t_pruned:9.1f} cand/s {pairs / t_pruned / 1e6:8.2f} M pairs/s"
            f" (scored {scored:,} of {pairs:,} pairs, {100 * scored / pairs:.3f}%), peak {mem_pruned:.0f} MiB,"
            f" index built in {build:.1f} s; kept {kept}/{len(candidates)}"
        )
        print(line, flush=True)
        if size > args.skip_unpruned_above:
            continue
        unpruned = RougeNoveltyIndex(threshold=args.threshold, prune=False)
        unpruned.add(pool[:size])
        t_full, v_full = judge(unpruned, candidates)
        mem_full = peak_mib(unpruned, candidates[: args.memory_candidates])
        print(
            f"pool {size:>9,}: unpruned {args.candidates / t_full:7.1f} cand/s {pairs / t_full / 1e6:8.2f} M pairs/s,"
            f" peak {mem_full:.0f} MiB; pruned/unpruned speed {t_full / t_pruned:.1f}x;"
            f" {agreement(v_pruned, v_full, min(args.threshold, pruned.neighbor_floor))}",
            flush=True,
        )
        del unpruned


if __name__ == "__main__":
    main()
