"""Near-duplicate benchmark: our batched MinHash LSH stage against per-record datasketch, one run.

What it measures, on deterministic synthetic instructions with planted near-duplicates:

1. Speed: the work `NearDedupFilter.apply` does on texts (batched `sign`, then
   `MinHashIndex.duplicates`, then `MinHashIndex.add` of the kept rows), in batches of 10,000 over
   the whole stream, against datasketch 2.0 used record by record (`MinHash` + `update` per
   shingle, `MinHashLSH.query`, `insert` when nothing is found) on the first records of the same
   stream. Records per second for each and the ratio.
2. Quality: precision and recall of both on those first records, with every reported pair and
   every planted pair labelled by the exact Jaccard similarity of the two texts' word-3-gram sets.
3. Memory: the peak RSS of a child process that pushes `--memory-records` records through our
   stage.

Run: `.venv/bin/python bench/dedup_bench.py` (`--help` for sizes, `--skip-memory` to leave out 3).
Nothing here asserts on timings; it only prints.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import re
import resource
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from datasketch import MinHash, MinHashLSH

from synth.filters.dedup import MinHashIndex
from synth.filters.minhash import sign
from synth.schemas.curation import MinHashConfig

SPEED_GOAL = 20.0
QUALITY_GOAL = 0.95
MEMORY_GOAL_GIB = 2.0
THRESHOLD = 0.8
NUM_PERM = 128
NGRAM = 3
BATCH = 10_000

_TOKEN = re.compile(r"\w+")


# -- synthetic data ---------------------------------------------------------------------------------


class InstructionStream:
    """Short instructions (8-30 words) over a made-up vocabulary with Zipf-like word frequencies,
    produced batch by batch from one `random.Random(seed)`.

    About `near_fraction` of the records are a copy of an earlier record with one or two words
    replaced or inserted, and `exact_fraction` are verbatim copies. The earlier record is drawn
    uniformly from a reservoir sample of everything produced so far (at most `reservoir` word
    lists are held), so the stream never keeps all its texts. Most edits land at the start or the
    end of the text (a changed or added first/last word, as in "Please ..." / "... briefly"):
    there they touch one word-3-gram, so most copies stay above a Jaccard of 0.8; the rest land
    anywhere, which breaks up to three 3-grams and often drops a short copy below it.
    """

    def __init__(
        self,
        seed: int = 0,
        vocab_size: int = 4000,
        near_fraction: float = 0.10,
        exact_fraction: float = 0.005,
        edge_share: float = 0.75,
        reservoir: int = 50_000,
    ) -> None:
        self.rng = random.Random(seed)
        rng = self.rng
        syllables = [c + v for c in "bcdfghklmnprstvz" for v in "aeiou"]
        words: list[str] = []
        seen: set[str] = set()
        while len(words) < vocab_size:
            word = "".join(rng.choices(syllables, k=rng.randint(2, 4)))
            if word not in seen:
                seen.add(word)
                words.append(word)
        self.words = words
        self.cum_weights = list(itertools.accumulate(1.0 / (rank + 1) for rank in range(vocab_size)))
        self.near_fraction = near_fraction
        self.exact_fraction = exact_fraction
        self.edge_share = edge_share
        self.reservoir_size = reservoir
        self.reservoir: list[tuple[int, list[str]]] = []
        self.produced = 0

    def _word(self) -> str:
        return self.rng.choices(self.words, cum_weights=self.cum_weights)[0]

    def _edit(self, tokens: list[str]) -> list[str]:
        rng = self.rng
        tokens = list(tokens)
        for _ in range(rng.randint(1, 2)):
            insert = rng.random() < 0.5 and len(tokens) < 30
            if rng.random() < self.edge_share:
                at = rng.choice((0, len(tokens) if insert else len(tokens) - 1))
            else:
                at = rng.randrange(len(tokens) + 1 if insert else len(tokens))
            word = self._word()
            if insert:
                tokens.insert(at, word)
            else:
                while word == tokens[at]:
                    word = self._word()
                tokens[at] = word
        return tokens

    def _remember(self, idx: int, tokens: list[str]) -> None:
        if len(self.reservoir) < self.reservoir_size:
            self.reservoir.append((idx, tokens))
        else:
            slot = self.rng.randrange(idx + 1)
            if slot < self.reservoir_size:
                self.reservoir[slot] = (idx, tokens)

    def batch(self, count: int) -> tuple[list[str], list[tuple[int, int]]]:
        """The next `count` texts, and the planted (original index, copy index) pairs among them."""
        rng = self.rng
        texts: list[str] = []
        planted: list[tuple[int, int]] = []
        for _ in range(count):
            idx = self.produced
            roll = rng.random()
            if self.reservoir and roll < self.near_fraction + self.exact_fraction:
                origin, source = rng.choice(self.reservoir)
                tokens = source if roll < self.exact_fraction else self._edit(source)
                planted.append((origin, idx))
            else:
                tokens = rng.choices(self.words, cum_weights=self.cum_weights, k=rng.randint(8, 30))
            texts.append(" ".join([tokens[0].capitalize(), *tokens[1:]]) + rng.choice((".", "?", ":", "")))
            self._remember(idx, tokens)
            self.produced += 1
        return texts, planted


def shingle_set(text: str) -> set[str]:
    """Distinct word-3-grams of a lowercased text (one shingle of all its words if shorter)."""
    tokens = _TOKEN.findall(text.lower())
    if len(tokens) <= NGRAM:
        return {" ".join(tokens)}
    return {" ".join(tokens[i : i + NGRAM]) for i in range(len(tokens) - NGRAM + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b)


# -- our stage and the baseline ---------------------------------------------------------------------


@dataclass
class DedupRun:
    """One method's pass over a stream: wall seconds and the (duplicate, matched) pairs it reported."""

    records: int
    seconds: float
    pairs: set[tuple[int, int]] = field(default_factory=set)

    @property
    def rate(self) -> float:
        return self.records / self.seconds

    @property
    def flagged(self) -> set[int]:
        return {dup for dup, _ in self.pairs}


class OurStage:
    """`NearDedupFilter.apply` on texts instead of `Record`s: the same calls, in the same order."""

    def __init__(self) -> None:
        self.config = MinHashConfig()
        self.index = MinHashIndex(self.config)  # picks its LSH bands once, outside any timer
        self.row_to_idx: list[int] = []  # index row -> stream position (kept records, in order)
        self.seen = 0
        self.seconds = 0.0
        self.pairs: set[tuple[int, int]] = set()

    def feed(self, texts: Sequence[str]) -> None:
        start = time.perf_counter()
        first = self.seen
        batch = sign(["\n".join((t, "", "")) for t in texts], self.config)  # record_text(...)
        keep: list[int] = []
        for i, dup in enumerate(self.index.duplicates(batch)):
            if dup is None:
                keep.append(i)
            else:
                j = dup[0]
                self.pairs.add((first + i, self.row_to_idx[j] if j >= 0 else first + (-1 - j)))
        self.index.add([str(first + i) for i in keep], batch.take(keep))
        self.row_to_idx.extend(first + i for i in keep)
        self.seen += len(texts)
        self.seconds += time.perf_counter() - start

    def result(self) -> DedupRun:
        return DedupRun(self.seen, self.seconds, self.pairs)


def run_ours(texts: Sequence[str]) -> DedupRun:
    stage = OurStage()
    for start in range(0, len(texts), BATCH):
        stage.feed(texts[start : start + BATCH])
    return stage.result()


def run_datasketch(texts: Sequence[str]) -> DedupRun:
    """One record at a time: a fresh MinHash fed shingle by shingle, a query, an insert if new."""
    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM)
    pairs: set[tuple[int, int]] = set()
    start = time.perf_counter()
    for idx, text in enumerate(texts):
        m = MinHash(num_perm=NUM_PERM)
        for shingle in shingle_set(text):
            m.update(shingle.encode())
        hits = lsh.query(m)
        if hits:
            pairs.update((idx, other) for other in hits)
        else:
            lsh.insert(idx, m)
    return DedupRun(len(texts), time.perf_counter() - start, pairs)


# -- quality against exact Jaccard ------------------------------------------------------------------


@dataclass
class Quality:
    precision: float
    recall: float
    reported: int
    flagged: int
    flag_precision: float  # share of flagged records with at least one truly similar reported match


def quality(run: DedupRun, truth: dict[tuple[int, int], bool], true_planted: list[tuple[int, int]]) -> Quality:
    flagged = run.flagged
    good_flags = {dup for dup, other in run.pairs if truth[(dup, other)]}
    return Quality(
        precision=sum(truth[p] for p in run.pairs) / len(run.pairs) if run.pairs else 1.0,
        recall=sum(copy in flagged for _, copy in true_planted) / len(true_planted) if true_planted else 1.0,
        reported=len(run.pairs),
        flagged=len(flagged),
        flag_precision=len(good_flags) / len(flagged) if flagged else 1.0,
    )


def lsh_candidate_probability(similarity: float, bands: int, rows: int) -> float:
    return 1.0 - (1.0 - similarity**rows) ** bands


# -- memory, in a child process ---------------------------------------------------------------------


def memory_child(records: int) -> None:
    """Stream `records` synthetic records through our stage; print one JSON line of results.

    The stream holds one batch of texts and the generator's reservoir of earlier word lists, never
    all the texts."""
    stream = InstructionStream()
    stage = OurStage()
    generated = 0
    start = time.perf_counter()
    while generated < records:
        texts, _ = stream.batch(min(BATCH, records - generated))
        generated += len(texts)
        stage.feed(texts)
    report = {
        "records": generated,
        "stage_seconds": stage.seconds,
        "wall_seconds": time.perf_counter() - start,
        "flagged": len(stage.pairs),
        "self_peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }
    print(json.dumps(report))


@dataclass
class MemoryResult:
    records: int
    children_peak_gib: float  # RUSAGE_CHILDREN after the child ended: the largest child so far
    self_peak_gib: float  # the child's own RUSAGE_SELF, read just before it exits
    stage_seconds: float
    wall_seconds: float
    flagged: int

    @property
    def rate(self) -> float:
        return self.records / self.stage_seconds


def bench_memory(records: int) -> MemoryResult:
    """Run `memory_child` in a fresh interpreter and read its peak resident set size."""
    command = [sys.executable, __file__, "--memory-child", "--memory-records", str(records)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return MemoryResult(
        records=report["records"],
        children_peak_gib=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20,  # KiB on Linux
        self_peak_gib=report["self_peak_kib"] / 2**20,
        stage_seconds=report["stage_seconds"],
        wall_seconds=report["wall_seconds"],
        flagged=report["flagged"],
    )


# -- entry point ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--records", type=int, default=200_000, help="records in the timed stream (default 200000)")
    p.add_argument(
        "--baseline-records",
        type=int,
        default=30_000,
        help="first records the datasketch baseline sees, and on which quality is measured (default 30000)",
    )
    p.add_argument(
        "--memory-records", type=int, default=1_000_000, help="records for the peak-memory child (default 1000000)"
    )
    p.add_argument("--skip-memory", action="store_true", help="do not run the peak-memory child")
    p.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for name in ("records", "baseline_records", "memory_records"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.baseline_records > args.records:
        p.error("--baseline-records cannot exceed --records")
    return args


_J_BUCKETS = ((0.0, 0.7, "<0.7"), (0.7, 0.8, "0.7-0.8"), (0.8, 0.9, "0.8-0.9"), (0.9, 1.0, "0.9-1"), (1.0, 2.0, "=1"))


def _bucket(j: float) -> str:
    return next(label for lo, hi, label in _J_BUCKETS if lo <= j < hi)


@dataclass
class QualityReport:
    ours: Quality
    base: Quality
    lines: list[str]


def bench_quality(
    texts: Sequence[str], planted: Sequence[tuple[int, int]], ours: DedupRun, base: DedupRun, bands: tuple[int, int]
) -> QualityReport:
    """Label every pair either method reported, and every planted pair, by exact Jaccard."""
    n = base.records
    shingles: dict[int, set[str]] = {}

    def exact(i: int, j: int) -> float:
        for k in (i, j):
            if k not in shingles:
                shingles[k] = shingle_set(texts[k])
        return jaccard(shingles[i], shingles[j])

    planted_j = {(copy, origin): exact(copy, origin) for origin, copy in planted if copy < n}
    truth = {pair: exact(*pair) >= THRESHOLD for pair in ours.pairs | base.pairs}
    truth.update((pair, j >= THRESHOLD) for pair, j in planted_j.items())
    true_planted = [(origin, copy) for (copy, origin), j in planted_j.items() if j >= THRESHOLD]
    histogram = Counter(_bucket(j) for j in planted_j.values())
    lines = [
        f"quality on the first {n:,} records: {len(planted_j):,} planted pairs, by exact Jaccard "
        + ", ".join(f"{label}: {histogram[label]:,}" for _, _, label in _J_BUCKETS)
    ]
    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM)
    for name, (b, r) in (("ours", bands), ("datasketch", (lsh.b, lsh.r))):
        chances = ", ".join(f"J={s}: {lsh_candidate_probability(s, b, r):.2f}" for s in (0.8, 0.85, 0.9))
        lines.append(f"  {name} LSH {b} bands x {r} rows; chance that a pair becomes a candidate {chances}")
    results = []
    for name, run in (("ours", ours), ("datasketch", base)):
        q = quality(run, truth, true_planted)
        results.append(q)
        caught = Counter(_bucket(planted_j[(copy, origin)]) for origin, copy in true_planted if copy in run.flagged)
        total = Counter(_bucket(planted_j[(copy, origin)]) for origin, copy in true_planted)
        by_j = ", ".join(f"{label}: {caught[label]:,}/{total[label]:,}" for _, _, label in _J_BUCKETS[2:])
        lines.append(
            f"  {name}: flagged {q.flagged:,} records, {q.reported:,} pairs; precision {q.precision:.3f} "
            f"(per flagged record {q.flag_precision:.3f}); recall {q.recall:.3f} of {len(true_planted):,} "
            f"planted pairs with J >= {THRESHOLD} (caught by J: {by_j})"
        )
    return QualityReport(results[0], results[1], lines)


def bench_tokenizer(english: Sequence[str], records: int = 50_000) -> list[str]:
    """The language-aware tokenizer's cost: signing the same texts with its shingle pattern and
    with the plain `\\w+` it replaced, interleaved in one process, for English (where both give the
    same shingles) and for Chinese (one token per character instead of one per sentence)."""
    import random
    import statistics

    from synth.filters import minhash
    from synth.filters.tokens import WORD_PATTERN

    rng = random.Random(1)
    hanzi = [chr(c) for c in range(0x4E00, 0x4E00 + 3000)]
    chinese = ["".join(rng.choices(hanzi, k=rng.randint(15, 60))) + "。" for _ in range(records)]
    config = MinHashConfig()
    lines = []
    for name, texts in (("English", list(english[:records])), ("Chinese", chinese)):
        times: dict[str, list[float]] = {r"\w+": [], "policy": []}
        for i in range(4):
            for label, pattern in ((r"\w+", r"\w+"), ("policy", WORD_PATTERN))[:: 1 if i % 2 else -1]:
                minhash.WORD_PATTERN = pattern
                start = time.perf_counter()
                sign(list(texts), config)
                times[label].append(time.perf_counter() - start)
        minhash.WORD_PATTERN = WORD_PATTERN
        old, new = statistics.median(times[r"\w+"]), statistics.median(times["policy"])
        lines.append(
            f"tokenizer, {name}, {len(texts):,} texts: \\w+ {len(texts) / old:,.0f} rec/s, language-aware "
            f"{len(texts) / new:,.0f} rec/s, ratio {old / new:.2f}"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.memory_child:
        memory_child(args.memory_records)
        return
    n, base_n = args.records, args.baseline_records

    start = time.perf_counter()
    texts, planted = InstructionStream().batch(n)
    words = [len(_TOKEN.findall(t)) for t in texts]
    verbatim = sum(texts[origin] == texts[copy] for origin, copy in planted)
    print(
        f"data: {n:,} instructions in {time.perf_counter() - start:.1f} s, {min(words)}-{max(words)} words, "
        f"{len(planted):,} planted copies ({verbatim:,} verbatim)",
        flush=True,
    )

    stage = OurStage()
    bands = stage.index.bands, stage.index.rows
    for begin in range(0, n, BATCH):
        stage.feed(texts[begin : begin + BATCH])
    ours = stage.result()
    print(
        f"ours, {n:,} records in batches of {BATCH:,}: {ours.seconds:.1f} s = {ours.rate:,.0f} rec/s, "
        f"flagged {len(ours.flagged):,}",
        flush=True,
    )
    ours_first = run_ours(texts[:base_n])
    print(f"ours, first {base_n:,} records: {ours_first.seconds:.2f} s = {ours_first.rate:,.0f} rec/s", flush=True)
    base = run_datasketch(texts[:base_n])
    print(
        f"datasketch per record, first {base_n:,} records: {base.seconds:.1f} s = {base.rate:,.0f} rec/s, "
        f"flagged {len(base.flagged):,}",
        flush=True,
    )

    report = bench_quality(texts, planted, ours_first, base, bands)
    print("\n".join(report.lines), flush=True)

    memory = None
    if not args.skip_memory:
        m = args.memory_records
        # The stage as timed above runs first, while no other child has run: RUSAGE_CHILDREN is its own peak.
        print(f"memory: {m:,} records through our stage in a child process ...", flush=True)
        memory = bench_memory(m)
        print(
            f"  stage {memory.stage_seconds:.1f} s = {memory.rate:,.0f} rec/s (with generation "
            f"{memory.wall_seconds:.1f} s), flagged {memory.flagged:,}; peak RSS {memory.children_peak_gib:.2f} GiB "
            f"(the child's own count: {memory.self_peak_gib:.2f} GiB)",
            flush=True,
        )

    print()
    print(
        f"same first {base_n:,} records: ours {ours_first.rate:,.0f} rec/s, datasketch {base.rate:,.0f} rec/s, "
        f"ratio {ours_first.rate / base.rate:.0f}x"
    )
    print(
        f"near-dedup: ours {ours.rate:,.0f} rec/s, datasketch per-record {base.rate:,.0f} rec/s, "
        f"ratio {ours.rate / base.rate:.0f}x (goal >= {SPEED_GOAL:.0f}x)"
    )
    for line in bench_tokenizer(texts):
        print(line)
    q_ours, q_base = report.ours, report.base
    print(
        f"precision/recall vs exact Jaccard >= {THRESHOLD}: ours {q_ours.precision:.3f}/{q_ours.recall:.3f}, "
        f"datasketch {q_base.precision:.3f}/{q_base.recall:.3f} (goal >= {QUALITY_GOAL} each)"
    )
    if memory is not None:
        print(
            f"peak memory, {memory.records:,} records through our stage: {memory.children_peak_gib:.2f} GiB "
            f"(goal < {MEMORY_GOAL_GIB:.0f} GiB)"
        )


if __name__ == "__main__":
    main()
