"""Self-Instruct at scale: a scripted run of a million records, its memory and where its time goes.

The run is Self-Instruct's own machinery without a model and without Prefect: a
`SelfInstructGenerator` on a `ScriptedEngine` that answers in microseconds, batch after batch, each
batch curated and committed by the flow's own `commit_curated` (the default curation chain: exact
and near dedup against the whole dataset, heuristics as the profile says) and its accepted tasks
then added to the novelty pool, as the flow does (`synth.flows.self_instruct`; the flow adds a
Prefect task per batch, left out here). Batch sizes follow `prompts_for_batch`, as in the flow, so
the run stops close to `--records` kept records.

The scripted engine's replies have the lengths of a real run: `--tasks-per-prompt` numbered tasks
per task prompt of 8-14 words, deterministic from `--seed` and the task's number; about `--near` of
them are an earlier task (one of the last 50,000) with one to three words replaced, which the
novelty check mostly rejects; the rest draw their words from a made-up vocabulary with Zipf-like
frequencies that keeps growing (a new word every `--new-word-every` tasks), as a model's tasks
bring new words. Every third task is a labelling task. Instance prompts get one to three
instances, each an input of 0-20 words and an output of 20-60 (a labelling task: a one-word label
and an input of 20-60 words), so a task keeps about two records. `--short` gives the replies of
the earlier version of this bench (tasks of 7-27 words, one instance of a few words each).

Timed: each batch's wall time (`run_batch` + `commit_curated` + `add_to_pool`), and within it the
novelty check (`RougeNoveltyIndex.check` of the batch's candidates and `add` of its accepted tasks
to the pool). Memory: peak RSS of this process (`ru_maxrss`; no children are started; it counts
the resident pages of the mapped files that hold the indexes' arrays, the ids, the dedup keys and
the task pool, which the kernel can write back and drop), peak anonymous memory (RSS less file-backed pages: what the run could die of), and the
bytes held per kept record: the slope of the anonymous memory over the records kept from 10% of
the run to its end, against the baseline of the records' own text (the UTF-8 bytes of instruction,
input and output: what keeping every record in memory would take at the least), as a ratio; then
the bytes per kept record of each structure that grows with the run, counted object by object
(`sys.getsizeof`, numpy's `nbytes`). Nothing is asserted.

Run: `.venv/bin/python bench/self_instruct_scale_bench.py --records 20000` (about a minute), or
without `--records` for a million (`--help` for the rest).
"""

from __future__ import annotations

import argparse
import bisect
import functools
import itertools
import random
import re
import resource
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from synth.engines import ChatRequest, ScriptedEngine
from synth.filters import RougeNoveltyIndex
from synth.filters.dedup import MinHashIndex, NearDedupFilter
from synth.filters.exact_dedup import ExactDedupFilter
from synth.flows.common import commit_curated
from synth.flows.curation import build_chain
from synth.flows.self_instruct import prompts_for_batch
from synth.generators import self_instruct
from synth.generators.seeds import load_seed_tasks
from synth.generators.self_instruct import SelfInstructGenerator
from synth.schemas import RunInfo, SelfInstructConfig
from synth.schemas.curation import CurationConfig
from synth.shards import DatasetWriter

_NEXT_TASK = re.compile(r"Task (\d+):$")
LETTERS = "abcdefghijklmnopqrstuvwxyz"
RECENT = 50_000


class ScaleScript:
    """Scripted replies for the three Self-Instruct prompts (see the module's docstring)."""

    def __init__(self, seed: int, tasks_per_prompt: int, near: float, new_word_every: int, short: bool = False) -> None:
        self.short = short
        self.seed = seed
        self.tasks_per_prompt = tasks_per_prompt
        self.near = near
        self.new_word_every = new_word_every
        self.counter = 0
        self.words: list[str] = []
        self.cum: list[float] = []
        self.recent: list[str] = []
        rng = random.Random(seed)
        for _ in range(5_000):
            self._new_word(rng)

    def _new_word(self, rng: random.Random) -> None:
        self.words.append("".join(rng.choices(LETTERS, k=rng.randint(3, 9))))
        self.cum.append((self.cum[-1] if self.cum else 0.0) + 1.0 / len(self.words))

    def _word(self, rng: random.Random) -> str:
        return self.words[bisect.bisect_left(self.cum, rng.random() * self.cum[-1])]

    def _words(self, rng: random.Random, least: int, most: int) -> str:
        return " ".join(self._word(rng) for _ in range(rng.randint(least, most)))

    def next_task(self) -> str:
        self.counter += 1
        rng = random.Random(self.seed * 1_000_003 + self.counter)
        if self.counter % self.new_word_every == 0:
            self._new_word(rng)
        if self.recent and rng.random() < self.near:
            tokens = rng.choice(self.recent).split()
            for _ in range(rng.randint(1, 3)):
                tokens[rng.randrange(2, len(tokens))] = self._word(rng)
            task = " ".join(tokens)
        else:
            kind = "label" if self.counter % 3 == 0 else "explain"
            task = f"Please {kind} " + self._words(rng, *((5, 25) if self.short else (6, 12)))
        if len(self.recent) < RECENT:
            self.recent.append(task)
        else:
            self.recent[rng.randrange(RECENT)] = task
        return task

    def __call__(self, request: ChatRequest) -> str:
        prompt = request.messages[-1].content
        if request.tag == "self_instruct_tasks":
            match = _NEXT_TASK.search(request.prefill or "")
            first = int(match.group(1)) if match else 1
            lines = [" " + self.next_task()]
            lines += [f"Task {first + i}: {self.next_task()}" for i in range(1, self.tasks_per_prompt)]
            return "\n".join(lines)
        task = prompt.rsplit("Task: ", 1)[1].strip()
        if request.tag == "self_instruct_classify":
            return " Yes" if task.startswith("Please label") else " No"
        if request.tag == "self_instruct_open_ended":
            return " no" if task.startswith("Please label") else " yes"
        prefill = request.prefill or ""
        if self.short:
            if request.tag == "self_instruct_instances_output_first":
                return f" positive\nInput: text for {task}"
            field = "" if prefill.endswith("Input:") else "Input:"
            return f"{field} input for {task}\nOutput: answer to {task}"
        rng = random.Random(f"{self.seed}:{request.tag}:{task}")
        parts = []
        for i in range(rng.randint(1, 3)):
            if request.tag == "self_instruct_instances_output_first":
                head = "" if i == 0 else f"\n\nExample {i + 1}\nClass label:"
                parts.append(f"{head} {self._word(rng)}\nInput: {self._words(rng, 20, 60)}")
            else:
                head = "" if i == 0 else f"\n\nExample {i + 1}\n"
                field = "" if i == 0 and prefill.endswith("Input:") else "Input:"
                parts.append(f"{head}{field} {self._words(rng, 0, 20) or 'None'}\nOutput: {self._words(rng, 20, 60)}")
        return "".join(parts)


def rss_gib(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux


def rss_now() -> int:
    """This process's anonymous resident memory now, in bytes: what it holds that the kernel cannot
    write back to a file when memory is short (the resident set less its file-backed pages, which
    include the near-dup index's mapped arrays)."""
    with open("/proc/self/statm") as f:
        fields = f.read().split()
    return (int(fields[1]) - int(fields[2])) * resource.getpagesize()


def _objects(items: Any) -> int:
    """A container's own size plus its items' (each counted once per container)."""
    return sys.getsizeof(items) + sum(map(sys.getsizeof, items))


def held(generator: SelfInstructGenerator, chain: Any) -> dict[str, int]:
    """Bytes held, structure by structure, by what grows with the run (buffers at their allocated size)."""
    novelty = generator.novelty
    postings = novelty._postings
    arrays = sum(
        sys.getsizeof(buckets) + sum(sys.getsizeof(b) for b in buckets if b is not None)
        for buckets in postings._postings.values()
    )
    out = {
        "novelty pool: refs (mapped file)": novelty.refs.nbytes,
        "novelty pool: token codes": _objects(novelty._tokens) + sys.getsizeof(postings._codes),
        "novelty pool: postings": sys.getsizeof(postings._postings)
        + arrays
        + postings._mark.nbytes
        + postings._slot.nbytes,
        "novelty pool: vocabulary": _objects(novelty._vocab)
        + _objects(novelty._id_tokens)
        + sys.getsizeof(novelty._vocab_sizes)
        + sys.getsizeof(postings._table),
        "generator: machine tasks (mapped file)": generator.machine_tasks.nbytes,
    }
    for f in chain.filters:
        if isinstance(f, ExactDedupFilter):
            out["exact dedup: keys, first ids (mapped files)"] = f.keys.nbytes + f.first.nbytes
        if isinstance(f, NearDedupFilter) and isinstance(f.index, MinHashIndex):
            index = f.index
            out["near dedup: ids, their digests (mapped files)"] = index.ids.nbytes + index._known.nbytes
            out["near dedup: ids not yet persisted"] = _objects(index._pending)
            out["near dedup: shingles, table (mapped files)"] = sum(
                a.nbytes for a in (index._sigs, index._shingles, index._offsets, index._table)
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prompts-per-batch", type=int, default=512)
    parser.add_argument("--tasks-per-prompt", type=int, default=7)
    parser.add_argument("--near", type=float, default=0.15, help="share of tasks that copy an earlier one")
    parser.add_argument("--new-word-every", type=int, default=20)
    parser.add_argument("--no-prune", action="store_true", help="score every pair (the reference path)")
    parser.add_argument("--short", action="store_true", help="the short replies of the earlier version")
    parser.add_argument("--no-curation", action="store_true", help="commit without the curation chain")
    parser.add_argument("--out", help="dataset directory (default: a temporary one, removed afterwards)")
    args = parser.parse_args()

    config = SelfInstructConfig(
        num_records=args.records,
        prompts_per_batch=args.prompts_per_batch,
        max_new_tasks_per_prompt=args.tasks_per_prompt,
        seed=args.seed,
    )
    if args.no_prune:
        self_instruct.RougeNoveltyIndex = functools.partial(RougeNoveltyIndex, prune=False)  # type: ignore[misc]
    script = ScaleScript(args.seed, args.tasks_per_prompt, args.near, args.new_word_every, args.short)
    engine = ScriptedEngine(script, keep_calls=False)
    generator = SelfInstructGenerator(config, engine, load_seed_tasks(), run_id="scale")
    novelty = generator.novelty
    novelty_seconds = 0.0

    def timed(method):  # type: ignore[no-untyped-def]
        def call(*a, **kw):  # type: ignore[no-untyped-def]
            nonlocal novelty_seconds
            start = time.perf_counter()
            try:
                return method(*a, **kw)
            finally:
                novelty_seconds += time.perf_counter() - start

        return call

    novelty.check, novelty.add = timed(novelty.check), timed(novelty.add)  # type: ignore[method-assign]

    temp = None if args.out else tempfile.TemporaryDirectory(prefix="synth-scale-")
    path = Path(args.out or temp.name) / "data"  # type: ignore[union-attr]
    print(
        f"Self-Instruct, scripted engine: target {args.records:,} records, {args.prompts_per_batch} prompts per"
        f" batch, {args.tasks_per_prompt} tasks per prompt, near-copies"
        f" {args.near:.0%}, pruning {'off' if args.no_prune else 'on'}; dataset {path}",
        flush=True,
    )
    rows: list[tuple[int, int, int, float, float, int]] = []  # batch, kept so far, batch kept, secs, novelty secs, pool
    rejected: Counter[str] = Counter()
    kept = sent = 0
    last: int | None = None
    run_start = time.perf_counter()
    # The flow's chain (CurationConfig's defaults) over the dataset, whose dedup indexes grow with it.
    chain, index = build_chain(CurationConfig(), path, language=config.language, profile=config.profile)
    rss: list[tuple[int, int]] = []  # (records kept, RSS now) after each batch
    text_bytes = text_records = 0  # the records' instruction, input and output, and their number
    early: tuple[int, dict[str, int]] | None = None  # records kept and `held` at 10% of the run
    with DatasetWriter(path, shard_rows=100_000) as writer:
        writer.start_run(RunInfo(run_id="scale", generator="self_instruct", config=config.model_dump(), engine={}))
        for batch in itertools.count():
            if kept >= args.records:
                break
            prompts = prompts_for_batch(config, kept, sent, last)
            start, novelty_before = time.perf_counter(), novelty_seconds
            result = generator.run_batch(batch, prompts)
            if args.no_curation:
                writer.commit_batch("scale", batch, result.kept, result.rejects)
            else:
                commit_curated(writer, "scale", batch, chain, index, result.kept, result.rejects)
            generator.add_to_pool(result.accepted_tasks)
            seconds = time.perf_counter() - start
            now = writer.manifest.runs["scale"].kept
            # Of the records before curation (the chain drops few of them here).
            text_bytes += sum(len(f"{r.instruction}{r.input}{r.output}".encode()) for r in result.kept)
            text_records += len(result.kept)
            new_kept, kept = now - kept, now
            sent += result.prompts
            last = result.prompts
            rows.append((batch, kept, new_kept, seconds, novelty_seconds - novelty_before, len(novelty)))
            rss.append((kept, rss_now()))
            if early is None and kept >= 0.1 * args.records:
                early = (kept, held(generator, chain))
            if batch % 20 == 0:
                print(
                    f"  batch {batch}: {kept:,} kept, pool {len(novelty):,}, {seconds:.2f} s"
                    f" ({novelty_seconds - novelty_before:.2f} s novelty), peak RSS {rss_gib(resource.RUSAGE_SELF):.2f} GiB",
                    flush=True,
                )
        writer.finish_run("scale")
        rejected = Counter(
            {stage: sum(n.values()) for stage, n in writer.manifest.runs["scale"].rejects_by_reason.items()}
        )
    total = time.perf_counter() - run_start

    print(f"batches {len(rows)}, kept {kept:,} records, rejected {sum(rejected.values()):,}: {dict(rejected)}")
    print(f"pool {len(novelty):,} tasks; pairs scored by the novelty search {novelty.search.scored:,}")
    if not args.no_prune:
        postings = novelty.search.index
        print(
            f"key order derived {postings.rebuilds} times (last from the first {postings.order_from:,} tasks),"
            f" postings rebuilt in {postings.rebuild_seconds:.1f} s in all (within the novelty time)"
        )
    for share in (0.1, 0.5, 1.0):
        # The batches of the window ending where the run reaches this share of its records.
        end = next(i for i, r in enumerate(rows) if r[1] >= share * kept)
        window = rows[max(0, end - 4) : end + 1]
        secs = sum(r[3] for r in window)
        nov = sum(r[4] for r in window)
        recs = sum(r[2] for r in window)
        print(
            f"at {share:4.0%} (batches {window[0][0]}-{window[-1][0]}, pool ~{window[-1][5]:,}):"
            f" {secs / len(window):.2f} s per batch, {1e6 * secs / max(1, recs):.0f} us per record kept,"
            f" novelty {nov / secs:.0%} of it"
        )
    print(
        f"total {total:.0f} s ({kept / total:,.0f} records/s); novelty {novelty_seconds:.0f} s = {novelty_seconds / total:.1%} of the run"
    )
    print(
        f"peak RSS: this process {rss_gib(resource.RUSAGE_SELF):.2f} GiB (file-backed pages included), children"
        f" {rss_gib(resource.RUSAGE_CHILDREN):.2f} GiB; peak anonymous {max(b for _, b in rss) / 2**30:.2f} GiB"
        " (goal < 2 GiB)"
    )
    late = [(k, b) for k, b in rss if early is not None and k >= early[0]]
    if early is not None and len(late) >= 2 and late[-1][0] > late[0][0]:
        slope = float(np.polyfit([k for k, _ in late], [b for _, b in late], 1)[0])
        text = text_bytes / max(1, text_records)
        print(
            f"held per kept record: {slope:,.0f} bytes of anonymous memory (from {late[0][0]:,} to {late[-1][0]:,} kept), against the"
            f" records' own text {text:,.0f} bytes: ratio {slope / text:.2f}x; a million records would hold"
            f" {slope * 1e6 / 2**30:.2f} GiB"
        )
        end = held(generator, chain)
        span = kept - early[0]
        for name, size in end.items():
            print(
                f"  {name}: {(size - early[1].get(name, 0)) / span:,.0f} bytes per kept record ({size / 2**20:,.1f} MiB now)"
            )
    if temp is not None:
        temp.cleanup()
    sys.stdout.flush()


if __name__ == "__main__":
    main()
