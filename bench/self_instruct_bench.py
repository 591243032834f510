"""Self-Instruct benchmark: two speed ratios of our code against a baseline, from one process.

(a) Generation: `VLLMEngine.chat` on a batch of real Self-Instruct task-generation requests, against
    the same conversations and sampling parameters handed straight to `vllm.LLM.chat`. Output
    tokens per second, median over alternating rounds; ours/raw should be close to 1.
(b) Novelty: `RougeNoveltyIndex.check` (batched rapidfuzz Indel on integer tokens) against a plain
    pure-Python dynamic-programming LCS ROUGE-L, in scored pairs per second, plus the largest
    score difference between the two on the pairs the baseline scored.

Run: `.venv/bin/python bench/self_instruct_bench.py` (`--help` for sizes; `--skip-generation`
runs only (b), without loading a model). Nothing here asserts on timings; it only prints.
"""

from __future__ import annotations

import os

# Before anything imports vLLM: keep its per-request INFO logging out of the report.
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

import argparse
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from synth.filters import RougeNoveltyIndex, rouge_l, rouge_tokens

GENERATION_GOAL = 0.9
NOVELTY_GOAL = 500.0


# -- (a) generation path vs raw vLLM ----------------------------------------------------------------


@dataclass
class GenerationResult:
    ours_tps: float
    raw_tps: float
    ours_tokens: int
    raw_tokens: int
    same_texts: int
    requests: int


def _timed(fn: Callable[[], int]) -> tuple[int, float]:
    """(tokens produced, wall seconds) of one call."""
    start = time.perf_counter()
    tokens = fn()
    return tokens, time.perf_counter() - start


def bench_generation(prompts: int, rounds: int) -> GenerationResult:
    from synth.engines import close_engines, get_engine
    from synth.engines.vllm_local import VLLMEngine
    from synth.generators.seeds import load_seed_tasks
    from synth.generators.self_instruct import SelfInstructGenerator
    from synth.schemas import SelfInstructConfig, VLLMEngineConfig

    print("loading the embedded model with vLLM ...", flush=True)
    start = time.perf_counter()
    engine = get_engine(VLLMEngineConfig())
    if not isinstance(engine, VLLMEngine):
        raise TypeError(f"expected the in-process vLLM engine, got {type(engine).__name__}")
    print(f"  loaded {engine.model_name} in {time.perf_counter() - start:.1f} s", flush=True)

    generator = SelfInstructGenerator(SelfInstructConfig(prompts_per_batch=prompts), engine, load_seed_tasks(), "bench")
    rng = random.Random("bench:0")
    requests = [generator.task_request(rng, 0, i) for i in range(prompts)]
    if any(r.prefill is None for r in requests):
        raise ValueError("task-generation requests are expected to carry an assistant prefill")

    # The raw call gets exactly what our engine sends: user turn + prefilled assistant turn, and
    # the SamplingParams our engine builds (per-request seeds included). Built outside the timer.
    # Seeds make the two paths sample alike, but vLLM's CPU batching is not bit-reproducible from
    # call to call, so a few completions (and the token totals) still differ slightly.
    conversations: list[list[Any]] = [
        [*(m.model_dump() for m in r.messages), {"role": "assistant", "content": r.prefill}] for r in requests
    ]
    params = [engine._params(r) for r in requests]
    llm = engine.llm

    ours_texts: list[str] = []
    raw_texts: list[str] = []

    def ours() -> int:
        completions = engine.chat(requests)
        ours_texts[:] = [c.text for c in completions]
        return sum(c.completion_tokens for c in completions)

    def raw() -> int:
        outputs = llm.chat(
            conversations,
            sampling_params=params,
            use_tqdm=False,
            add_generation_prompt=False,
            continue_final_message=True,
        )
        raw_texts[:] = [o.outputs[0].text for o in outputs]
        return sum(len(o.outputs[0].token_ids) for o in outputs)

    # Warm-up: one untimed call per path (first-call costs; the prompts then sit in the prefix
    # cache, which serves both paths alike in the timed rounds).
    print(f"warm-up: {prompts} task-generation requests, one untimed call per path ...", flush=True)
    for name, fn in (("ours", ours), ("raw", raw)):
        tokens, seconds = _timed(fn)
        print(f"  {name:4s} {tokens:6d} tokens in {seconds:6.1f} s (untimed warm-up)", flush=True)

    rates: dict[str, list[float]] = {"ours": [], "raw": []}
    tokens_per_call: dict[str, list[int]] = {"ours": [], "raw": []}
    for r in range(rounds):
        # Alternate which path goes first so a slow drift of the machine hits both alike.
        order = (("ours", ours), ("raw", raw)) if r % 2 == 0 else (("raw", raw), ("ours", ours))
        for name, fn in order:
            tokens, seconds = _timed(fn)
            rates[name].append(tokens / seconds)
            tokens_per_call[name].append(tokens)
            print(
                f"  round {r + 1} {name:4s} {tokens:6d} tokens in {seconds:6.1f} s = {tokens / seconds:7.1f} tok/s",
                flush=True,
            )

    same = sum(a == b for a, b in zip(ours_texts, raw_texts, strict=True))
    close_engines()
    return GenerationResult(
        ours_tps=statistics.median(rates["ours"]),
        raw_tps=statistics.median(rates["raw"]),
        ours_tokens=sum(tokens_per_call["ours"]),
        raw_tokens=sum(tokens_per_call["raw"]),
        same_texts=same,
        requests=prompts,
    )


# -- (b) novelty filter vs pure-Python LCS ----------------------------------------------------------


def synthetic_instructions(count: int, vocab_size: int, dup_fraction: float, seed: int = 0) -> list[str]:
    """`count` short instructions (5-25 words) over a made-up vocabulary with Zipf-like word
    frequencies; about `dup_fraction` of them are near-duplicates of an earlier one (a word or two
    replaced, dropped or inserted). Deterministic for a given seed."""
    rng = random.Random(seed)
    syllables = [c + v for c in "bcdfghklmnprstvz" for v in "aeiou"]
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < vocab_size:
        word = "".join(rng.choices(syllables, k=rng.randint(1, 3)))
        if word not in seen:
            seen.add(word)
            words.append(word)
    weights = [1.0 / (rank + 1) for rank in range(vocab_size)]

    def sentence(tokens: list[str]) -> str:
        end = rng.choice([".", "?", ":", ""])
        return " ".join([tokens[0].capitalize(), *tokens[1:]]) + end

    token_lists: list[list[str]] = []
    texts: list[str] = []
    for _ in range(count):
        if token_lists and rng.random() < dup_fraction:
            tokens = list(rng.choice(token_lists))
            for _ in range(rng.randint(1, 2)):
                op, at = rng.choice(("replace", "drop", "insert")), rng.randrange(len(tokens))
                if op == "replace":
                    tokens[at] = rng.choices(words, weights)[0]
                elif op == "drop" and len(tokens) > 5:
                    del tokens[at]
                elif len(tokens) < 25:
                    tokens.insert(at, rng.choices(words, weights)[0])
        else:
            tokens = rng.choices(words, weights, k=rng.randint(5, 25))
        token_lists.append(tokens)
        texts.append(sentence(tokens))
    return texts


def lcs_rouge_l(a: Sequence[str], b: Sequence[str]) -> float:
    """Reference ROUGE-L F1 = 2·LCS / (|a| + |b|) by the textbook O(|a|·|b|) dynamic program."""
    if not a or not b:
        return 0.0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return 2.0 * prev[-1] / (len(a) + len(b))


@dataclass
class NoveltyResult:
    ours_pps: float
    kernel_pps: float
    base_pps: float
    max_diff: float
    max_diff_matrix: float


def bench_novelty(pool_size: int, candidates: int, base_pairs: int, repeats: int) -> NoveltyResult:
    texts = synthetic_instructions(pool_size + candidates, vocab_size=400, dup_fraction=0.15)
    pool, batch = texts[:pool_size], texts[pool_size:]
    index = RougeNoveltyIndex()
    index.add(pool)
    print(
        f"novelty: {candidates} candidates against a pool of {pool_size} ({candidates * pool_size:,} pairs)", flush=True
    )

    index.check(batch, add=False)  # warm-up (rapidfuzz's thread pool, numpy)
    seconds: list[float] = []
    verdicts = []
    for _ in range(repeats):
        start = time.perf_counter()
        verdicts = index.check(batch, add=False)
        seconds.append(time.perf_counter() - start)
    # Counted: candidate x pool pairs only; the candidate x candidate matrix that `check` also
    # scores, and its ranking and bookkeeping, are in the time but not in the count.
    ours_pps = candidates * pool_size / statistics.median(seconds)
    kept = sum(v.kept for v in verdicts)
    print(
        f"  ours: check() median {statistics.median(seconds) * 1000:.1f} ms over {repeats} runs; kept {kept}/{candidates}",
        flush=True,
    )

    # For diagnosis only: the scoring kernel alone (candidates x pool matrix on encoded tokens).
    encoded = [index._encode(t) for t in batch]
    kernel: list[float] = []
    for _ in range(repeats):
        start = time.perf_counter()
        index._scores(encoded, index._tokens)
        kernel.append(time.perf_counter() - start)
    kernel_pps = candidates * pool_size / statistics.median(kernel)
    print(
        f"  ours, scoring kernel alone (_scores): median {statistics.median(kernel) * 1000:.1f} ms = {kernel_pps:,.0f} pairs/s",
        flush=True,
    )

    rng = random.Random(1)
    pairs = [(rng.randrange(candidates), rng.randrange(pool_size)) for _ in range(base_pairs)]
    batch_tokens = [rouge_tokens(t) for t in batch]
    pool_tokens = [rouge_tokens(t) for t in pool]
    start = time.perf_counter()
    reference = [lcs_rouge_l(batch_tokens[i], pool_tokens[j]) for i, j in pairs]
    base_seconds = time.perf_counter() - start
    base_pps = base_pairs / base_seconds
    print(f"  pure-Python LCS: {base_pairs:,} random pairs in {base_seconds:.2f} s", flush=True)

    ours_pairwise = [rouge_l(batch_tokens[i], pool_tokens[j]) for i, j in pairs]
    matrix = index._scores(encoded, index._tokens)
    ref = np.array(reference)
    max_diff = float(np.max(np.abs(np.array(ours_pairwise) - ref)))
    rows, cols = zip(*pairs, strict=True)
    max_diff_matrix = float(np.max(np.abs(matrix[list(rows), list(cols)] - ref)))
    print(
        f"  max |rouge_l - reference| {max_diff:.3g}; max |index matrix - reference| {max_diff_matrix:.3g}", flush=True
    )
    return NoveltyResult(ours_pps, kernel_pps, base_pps, max_diff, max_diff_matrix)


# -- entry point ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--prompts", type=int, default=32, help="task-generation requests per batch (default 32)")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds per generation path (default 3)")
    p.add_argument("--pool", type=int, default=2000, help="novelty pool size (default 2000)")
    p.add_argument("--candidates", type=int, default=200, help="novelty candidates per check (default 200)")
    p.add_argument(
        "--baseline-pairs", type=int, default=20_000, help="pairs the pure-Python LCS scores (default 20000)"
    )
    p.add_argument("--novelty-repeats", type=int, default=5, help="timed check() calls, median taken (default 5)")
    p.add_argument("--skip-generation", action="store_true", help="run only the novelty part (no model is loaded)")
    args = p.parse_args(argv)
    for name in ("prompts", "rounds", "pool", "candidates", "baseline_pairs", "novelty_repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    print(f"cpus: {os.cpu_count()}", flush=True)
    novelty = bench_novelty(args.pool, args.candidates, args.baseline_pairs, args.novelty_repeats)
    generation = None if args.skip_generation else bench_generation(args.prompts, args.rounds)

    print()
    n = novelty
    print(f"novelty scoring kernel alone (diagnosis, not the goal): ratio {n.kernel_pps / n.base_pps:.0f}x")
    if generation is not None:
        g = generation
        print(
            f"generation tokens over all timed rounds: ours {g.ours_tokens}, raw vLLM {g.raw_tokens}; "
            f"identical completions in the last round {g.same_texts}/{g.requests}"
        )
        print(
            f"generation: ours {g.ours_tps:.1f} tok/s, raw vLLM {g.raw_tps:.1f} tok/s, "
            f"ratio {g.ours_tps / g.raw_tps:.2f} (goal >= {GENERATION_GOAL})"
        )
    print(
        f"novelty: ours {n.ours_pps:,.0f} pairs/s, pure-Python LCS {n.base_pps:,.0f} pairs/s, "
        f"ratio {n.ours_pps / n.base_pps:.0f}x (goal >= {NOVELTY_GOAL:.0f}x), "
        f"max |diff| {max(n.max_diff, n.max_diff_matrix):.3g}"
    )


if __name__ == "__main__":
    main()
