"""ROUGE-L novelty: exact against the reference scorer (`rouge_score`), and the pool rules of Self-Instruct."""

from __future__ import annotations

import random

import pytest
from rouge_score import rouge_scorer

from synth.filters import RougeNoveltyIndex, rouge_l, rouge_tokens
from synth.filters.novelty import neighbor_ref

_SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def reference_rouge_l(a: list[str], b: list[str]) -> float:
    """ROUGE-L F1 by the reference implementation, `rouge_score`, on ASCII tokens (which its own
    tokenizer leaves as they are when joined by spaces)."""
    assert all(t.isascii() and t.isalnum() and t == t.lower() for t in a + b)
    return _SCORER.score(" ".join(a), " ".join(b))["rougeL"].fmeasure


def test_score_equals_the_reference_scorer_on_random_token_lists():
    rng = random.Random(7)
    vocab = [f"t{i}" for i in range(12)]
    for _ in range(500):
        a = [rng.choice(vocab) for _ in range(rng.randint(0, 20))]
        b = [rng.choice(vocab) for _ in range(rng.randint(0, 20))]
        assert rouge_l(a, b) == pytest.approx(reference_rouge_l(a, b), abs=1e-12)


def test_batched_scores_equal_reference_for_every_pair():
    rng = random.Random(3)
    words = [
        "the",
        "a",
        "cat",
        "dog",
        "sat",
        "on",
        "mat",
        "ran",
        "far",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "lazy",
    ]
    pool = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 12))) for _ in range(40)]
    candidates = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 12))) for _ in range(25)]
    # Threshold 1.0 keeps every candidate, so each is compared with the pool and all earlier ones
    # (every pair scored: the reference path; the pruned one is compared with it elsewhere).
    index = RougeNoveltyIndex(threshold=1.0, neighbors_kept=len(pool) + len(candidates), prune=False)
    index.add(pool)
    for i, verdict in enumerate(index.check(candidates, add=False)):
        expected = max(reference_rouge_l(rouge_tokens(verdict.text), rouge_tokens(p)) for p in pool + candidates[:i])
        assert verdict.max_score == pytest.approx(expected, abs=1e-12)
        assert verdict.neighbor_scores == sorted(verdict.neighbor_scores, reverse=True)


def test_tokenization_follows_rouge_score_without_stemming():
    assert rouge_tokens("Hello, World! It's 2024-ish.") == ["hello", "world", "it", "s", "2024", "ish"]
    assert rouge_tokens("Running runs") == ["running", "runs"]


def test_empty_token_lists_score_zero_not_one():
    index = RougeNoveltyIndex(threshold=0.7)
    index.add(["!!!"])
    [verdict] = index.check(["???"])
    assert verdict.max_score == 0.0
    assert verdict.kept


def test_candidate_above_threshold_is_rejected_with_its_neighbors():
    index = RougeNoveltyIndex(threshold=0.7, neighbors_kept=2)
    index.add(["write a short poem about the sea", "explain how tides work", "list three fruits"])
    near, far = index.check(["write a short poem about the blue sea", "describe the rules of chess briefly"])
    assert not near.kept
    assert near.neighbors[0] == neighbor_ref("write a short poem about the sea")
    assert near.max_score > 0.7
    # Pruned, neighbours come from the pool texts the prefix filter examined: here only the near one.
    assert near.neighbors == [neighbor_ref("write a short poem about the sea")]
    assert far.kept


def test_threshold_is_exclusive():
    # 2*LCS/(|a|+|b|) = 2*7/(10+10) = 0.7 exactly: kept, since only scores above 0.7 are rejected.
    a = "w1 w2 w3 w4 w5 w6 w7 x1 x2 x3"
    b = "w1 w2 w3 w4 w5 w6 w7 y1 y2 y3"
    index = RougeNoveltyIndex(threshold=0.7)
    index.add([a])
    [verdict] = index.check([b])
    assert verdict.max_score == pytest.approx(0.7)
    assert verdict.kept


def test_candidates_accepted_earlier_in_a_batch_join_the_pool_for_later_ones():
    index = RougeNoveltyIndex(threshold=0.7)
    index.add(["an unrelated seed task about gardening"])
    first, second = index.check(
        ["summarize the news article in two sentences", "summarize the news article in three sentences"]
    )
    assert first.kept
    assert not second.kept
    assert second.neighbors[0] == neighbor_ref(first.text)


def test_rejected_candidates_do_not_join_the_pool():
    index = RougeNoveltyIndex(threshold=0.7)
    index.add(["tell me a joke about cats and dogs"])
    index.check(["tell me a joke about cats and dogs please"])
    assert len(index) == 1


def test_check_without_add_leaves_the_pool_unchanged():
    index = RougeNoveltyIndex(threshold=0.7)
    index.add(["seed"])
    [verdict] = index.check(["a completely different request"], add=False)
    assert verdict.kept
    assert list(index.refs) == [neighbor_ref("seed")]


def reference_verdicts(pool: list[str], candidates: list[str], threshold: float, k: int) -> list[tuple]:
    """The verdicts from one full score row per candidate (pool, then the candidates kept before
    it), best first with ties to the earlier position: what a chunked pool must reproduce."""
    pool_tokens = [rouge_tokens(t) for t in pool]
    accepted: list[int] = []
    out = []
    for i, text in enumerate(candidates):
        tokens = rouge_tokens(text)
        row = [rouge_l(tokens, p) for p in pool_tokens] + [
            rouge_l(tokens, rouge_tokens(candidates[j])) for j in accepted
        ]
        best = max(row, default=0.0)
        order = sorted(range(len(row)), key=lambda j: (-row[j], j))[:k]
        names = [
            neighbor_ref(pool[j]) if j < len(pool) else neighbor_ref(candidates[accepted[j - len(pool)]]) for j in order
        ]
        out.append((best <= threshold, round(best, 12), names, [round(row[j], 12) for j in order]))
        if best <= threshold:
            accepted.append(i)
    return out


def test_a_pool_scored_in_slices_gives_exactly_the_verdicts_of_full_rows(monkeypatch):
    """Memory is bounded by slicing the pool; verdicts, scores and neighbours (ties included)
    must not change, however small the slices."""
    from synth.filters import novelty

    rng = random.Random(5)
    words = ["river", "delta", "map", "write", "poem", "list", "three", "explain", "why", "cats"]
    pool = [" ".join(rng.choice(words) for _ in range(rng.randint(2, 7))) for _ in range(700)]
    candidates = [" ".join(rng.choice(words) for _ in range(rng.randint(2, 7))) for _ in range(40)]
    expected = reference_verdicts(pool, candidates, 0.7, 10)
    for cells in (1 << 24, 40 * 256, 40 * 300):
        monkeypatch.setattr(novelty, "MAX_SCORE_CELLS", cells)
        index = RougeNoveltyIndex(threshold=0.7, neighbors_kept=10, prune=False)
        index.add(pool)
        got = [
            (v.kept, round(v.max_score, 12), v.neighbors, [round(x, 12) for x in v.neighbor_scores])
            for v in index.check(candidates)
        ]
        assert got == expected


def test_scoring_memory_is_bounded_by_the_slice_not_the_pool(monkeypatch):
    import tracemalloc

    from synth.filters import novelty

    monkeypatch.setattr(novelty, "MAX_SCORE_CELLS", 1 << 20)  # 8 MiB of scores at a time
    rng = random.Random(9)
    words = [f"w{i}" for i in range(300)]
    index = RougeNoveltyIndex(threshold=0.7, neighbors_kept=10, prune=False)
    index.add([" ".join(rng.choices(words, k=8)) for _ in range(40_000)])
    candidates = [" ".join(rng.choices(words, k=8)) for _ in range(1_000)]
    tracemalloc.start()
    verdicts = index.check(candidates, add=False)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(verdicts) == 1_000 and all(len(v.neighbors) == 10 for v in verdicts)
    # A full candidates x pool matrix would be 1,000 x 40,000 x 8 bytes = 320 MB.
    assert peak < 64 * 2**20
