"""ROUGE-L novelty: exact against a plain LCS reference, and the pool rules of Self-Instruct."""

from __future__ import annotations

import random

import pytest

from synth.filters import RougeNoveltyIndex, rouge_l, rouge_tokens
from synth.filters.novelty import neighbor_ref


def reference_rouge_l(a: list[str], b: list[str]) -> float:
    """ROUGE-L F1 by textbook dynamic programming (the rouge_score definition, beta = 1)."""
    if not a or not b:
        return 0.0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, start=1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    lcs = prev[-1]
    precision, recall = lcs / len(b), lcs / len(a)
    return 0.0 if lcs == 0 else 2 * precision * recall / (precision + recall)


def test_score_equals_reference_lcs_on_random_token_lists():
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
    # Threshold 1.0 keeps every candidate, so each is compared with the pool and all earlier ones.
    index = RougeNoveltyIndex(threshold=1.0, neighbors_kept=len(pool) + len(candidates))
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
    assert len(near.neighbors) == 2
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
    assert index.refs == [neighbor_ref("seed")]
