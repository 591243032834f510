"""Selection benchmark: choosing a budget among 100K candidates whose scores and embeddings exist.

What it measures, in one process, on deterministic synthetic data (clustered unit embeddings, so
that the diversity rule refuses some candidates; integer complexity and quality ratings, so that
scores tie):

1. deita: `select_deita` (blocks of candidates against the selected set in one matrix product)
   against the sequential rule of the paper's code, one candidate at a time (one matrix-vector
   product against the selected set per candidate), on the same data. Both must select the same
   records in the same order; the bench says whether they did.
2. The other selectors on the same candidates: ifd, longest, random, kcenter (`--kcenter-budget`,
   its cost grows with the budget), and the diversity figure of the deita subset.
3. With `--write`: `write_selection` of the deita choice as a dataset (the selected records kept,
   every other one a reject with its scores), from a synthetic source dataset of the same size.

Run: `.venv/bin/python bench/select_bench.py` (`--help` for sizes). Nothing asserts on timings.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from synth.selection.embeddings import unit_rows
from synth.selection.selectors import (
    Selection,
    diversity,
    select_deita,
    select_ifd,
    select_kcenter,
    select_longest,
    select_random,
)


def synthetic(n: int, dim: int, clusters: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Unit embeddings around `clusters` centers, complexity x quality on 1-6 each, IFD around 0.8,
    response lengths from 1 to 2000 tokens."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, dim)).astype(np.float32)
    members = rng.integers(clusters, size=n)
    noise = rng.normal(scale=0.35, size=(n, dim)).astype(np.float32)
    embeddings = unit_rows(centers[members] + noise)
    scores = (rng.integers(1, 7, size=n) * rng.integers(1, 7, size=n)).astype(np.float64)
    ifd = rng.normal(0.8, 0.15, size=n)
    tokens = rng.integers(1, 2000, size=n).astype(np.float64)
    return embeddings, scores, ifd, tokens


def deita_one_at_a_time(scores: np.ndarray, embeddings: np.ndarray, budget: int, threshold: float) -> Selection:
    """The paper code's rule, candidate by candidate: its similarity to every selected record,
    admitted if none is above 1 - threshold."""
    unit = unit_rows(embeddings)
    order = np.lexsort((np.arange(len(scores)), -scores))
    chosen = np.empty((budget, unit.shape[1]), dtype=np.float32)
    indices: list[int] = []
    distances: list[float] = []
    for i in order:
        if indices:
            nearest = float((chosen[: len(indices)] @ unit[i]).max())
            if nearest >= 1.0 - threshold:
                continue
            distances.append(1.0 - nearest)
        else:
            distances.append(float("nan"))
        chosen[len(indices)] = unit[i]
        indices.append(int(i))
        if len(indices) == budget:
            break
    return Selection(np.asarray(indices), np.asarray(distances))


def timed(label: str, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    seconds = time.perf_counter() - start
    print(f"{label}: {seconds:.2f} s")
    return result, seconds


def write_bench(n: int, embeddings: np.ndarray, scores: np.ndarray, budget: int, threshold: float) -> None:
    from synth.flows.selection_write import write_selection
    from synth.schemas import Record, RunInfo
    from synth.schemas.selection import SelectionConfig
    from synth.selection.candidates import Candidates, choose, load_items
    from synth.shards import DatasetWriter

    with tempfile.TemporaryDirectory(prefix="select-bench-") as scratch:
        source, out = Path(scratch) / "src", Path(scratch) / "out"
        start = time.perf_counter()
        with DatasetWriter(source) as writer:
            writer.start_run(RunInfo(run_id="gen", generator="bench", config={}, engine={}, model=""))
            for batch, first in enumerate(range(0, n, 10_000)):
                rows = [
                    Record(
                        generator="bench",
                        instruction=f"Task {i}: explain topic {i % 977} in detail.",
                        output=f"An answer of some length about topic {i % 977}, variant {i}.",
                    )
                    for i in range(first, min(n, first + 10_000))
                ]
                writer.commit_batch("gen", batch, rows, [])
            writer.finish_run("gen")
        print(f"(source dataset of {n:,} records built in {time.perf_counter() - start:.1f} s; not timed below)")
        items = load_items(source)
        frame = items.select("id").with_columns(
            pl.Series("complexity_score", np.sqrt(scores)),
            pl.Series("quality_score", np.sqrt(scores)),
            pl.lit(None, dtype=pl.Float64).alias("ifd"),
            pl.lit(None, dtype=pl.Int64).alias("response_tokens"),
        )
        candidates = Candidates(items, frame, {}, embeddings, {})
        config = SelectionConfig(budget=budget, threshold=threshold)
        start = time.perf_counter()
        choice = choose(candidates, "deita", config)
        summary = write_selection(source, out, candidates, choice, config)
        seconds = time.perf_counter() - start
        print(f"write: choose + write_selection of {n:,} records ({summary['kept']:,} kept, {summary['rejected']:,} "
              f"rejects): {seconds:.1f} s, {n / seconds:,.0f} records/s")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidates", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=576, help="Embedding size (the embedded model's is 576).")
    parser.add_argument("--clusters", type=int, default=2_000)
    parser.add_argument("--budget", type=int, default=10_000)
    parser.add_argument("--threshold", type=float, default=0.1)
    parser.add_argument("--kcenter-budget", type=int, default=1_000)
    parser.add_argument("--write", action="store_true", help="Also time writing the selection as a dataset.")
    args = parser.parse_args()

    embeddings, scores, ifd, tokens = synthetic(args.candidates, args.dim, args.clusters)
    print(
        f"{args.candidates:,} candidates, {args.dim}-d embeddings in {args.clusters:,} clusters, budget {args.budget:,}"
    )
    ours, ours_s = timed("deita (ours, blocks)", select_deita, scores, embeddings, args.budget, args.threshold)
    base, base_s = timed("deita (one candidate at a time)", deita_one_at_a_time, scores, embeddings, args.budget,
                         args.threshold)  # fmt: skip
    same = ours.indices.tolist() == base.indices.tolist()
    refused = int(ours.refused.sum())
    print(
        f"deita selected {len(ours.indices):,} ({refused:,} refused as too similar, {len(ours.indices) + refused:,} examined)"
    )
    timed("ifd", select_ifd, ifd, args.budget)
    timed("longest", select_longest, tokens, args.budget)
    timed("random", select_random, args.candidates, args.budget, 0)
    timed(f"kcenter (budget {args.kcenter_budget:,})", select_kcenter, embeddings, args.kcenter_budget, 0)
    div, _ = timed("diversity of the deita subset", diversity, embeddings[ours.indices])
    print(f"diversity of the deita subset: {div:.4f}")
    if args.write:
        write_bench(args.candidates, embeddings, scores, args.budget, args.threshold)
    print(
        f"deita: ours {ours_s:.2f} s, one at a time {base_s:.2f} s, ratio {base_s / ours_s:.1f}x; "
        f"same selection: {'yes' if same else 'NO'}"
    )


if __name__ == "__main__":
    main()
