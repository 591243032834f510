"""Pruned ROUGE-L novelty gives exactly what scoring every pair gives: verdicts, scores, neighbours,
a whole Self-Instruct run's records; and its memory is bounded by the chunk, not by the pool."""

from __future__ import annotations

import functools
import json
import random
import tracemalloc

import pytest

from synth.filters import RougeNoveltyIndex
from synth.filters.novelty_search import PrunedSearch, TokenPostings, length_ratio_bound


def verdicts(pool: list[str], candidates: list[str], prune: bool, **kw) -> list[tuple]:
    index = RougeNoveltyIndex(prune=prune, **kw)
    index.add(pool)
    out = [(v.text, v.kept, v.max_score, v.neighbors, v.neighbor_scores) for v in index.check(candidates)]
    # The kept candidates joined the pool: a second call sees the same pool on both paths.
    out += [(v.text, v.kept, v.max_score, v.neighbors, v.neighbor_scores) for v in index.check(candidates[::-1])]
    return out


def assert_same(pool: list[str], candidates: list[str], **kw) -> None:
    assert verdicts(pool, candidates, True, **kw) == verdicts(pool, candidates, False, **kw)


def sentence(rng: random.Random, words: list[str], low: int = 0, high: int = 12) -> str:
    return " ".join(rng.choice(words) for _ in range(rng.randint(low, high)))


@pytest.mark.parametrize("seed", range(6))
def test_pruned_equals_unpruned_on_random_text(seed):
    rng = random.Random(seed)
    # A few very common words (as "the") and many rare ones: skewed overlaps, many ties.
    words = ["the", "a", "of", "to"] * 6 + [f"w{i}" for i in range(40)]
    pool = [sentence(rng, words) for _ in range(600)]
    candidates = [sentence(rng, words) for _ in range(80)]
    candidates += [p.replace("the", "a", 1) for p in rng.sample(pool, 20)]  # near-duplicates
    rng.shuffle(candidates)
    assert_same(pool, candidates, threshold=rng.choice([0.5, 0.7, 0.9]), neighbors_kept=rng.choice([1, 3, 10]))


def test_pruned_equals_unpruned_on_cjk_empty_duplicate_and_tied_texts():
    rng = random.Random(11)
    cjk = list("的一是不了人我在有他这为之大来以个中上们")
    pool = ["".join(rng.choices(cjk, k=rng.randint(0, 15))) for _ in range(200)]
    pool += ["", "!!!", "。", "写一首诗", "写一首诗", "a b c d", "d c b a", "a a a a b", "b a a a a"]
    pool += ["w1 w2 w3 w4 w5 w6 w7 x1 x2 x3"] * 3  # exact ties with a candidate at 0.7
    candidates = ["", "???", "写一首诗", "写一首歌", "a b c d", "a a b", "w1 w2 w3 w4 w5 w6 w7 y1 y2 y3"]
    candidates += ["".join(rng.choices(cjk, k=rng.randint(0, 15))) for _ in range(60)]
    candidates += candidates[:10]  # repeats within one call
    for k in (1, 10, 300):
        assert_same(pool, candidates, threshold=0.7, neighbors_kept=k)


def test_pruned_equals_unpruned_with_fewer_sharing_texts_than_neighbours():
    pool = ["alpha beta", "gamma delta", "", "epsilon", "alpha"]
    assert_same(pool, ["alpha", "zeta eta", "", "alpha beta gamma"], threshold=0.7, neighbors_kept=10)
    assert_same([], ["alpha", ""], threshold=0.7, neighbors_kept=10)


def test_pruned_equals_unpruned_across_chunks_of_one_call(monkeypatch):
    from synth.filters import novelty

    monkeypatch.setattr(novelty, "CHECK_CHUNK", 7)
    rng = random.Random(2)
    words = [f"w{i}" for i in range(15)]
    pool = [sentence(rng, words, 1, 8) for _ in range(100)]
    candidates = [sentence(rng, words, 1, 8) for _ in range(50)]
    expected = verdicts(pool, candidates, False)
    monkeypatch.setattr(novelty, "CHECK_CHUNK", 1024)
    assert verdicts(pool, candidates, True) == expected


def test_pruning_scores_few_pairs_when_most_share_little():
    rng = random.Random(4)
    words = [f"w{i}" for i in range(3000)]
    index = RougeNoveltyIndex(threshold=0.7)
    index.add([sentence(rng, words, 5, 15) for _ in range(5000)])
    index.check([sentence(rng, words, 5, 15) for _ in range(20)], add=False)
    assert index.search.pairs == 20 * 5000
    assert index.search.scored < index.search.pairs / 20


def test_check_without_add_truncate_and_a_failed_check_leave_the_postings_with_the_pool(monkeypatch):
    from synth.filters import novelty

    index = RougeNoveltyIndex(threshold=0.7)
    index.add(["tell me a joke", "write poems now"])
    index.check(["a brand new task", "another brand new task"], add=False)
    assert len(index) == len(index._postings) == 2
    monkeypatch.setattr(novelty, "CHECK_CHUNK", 1)
    calls = []
    real = index._check_chunk

    def failing(chunk):
        calls.append(chunk)
        if len(calls) == 2:
            raise RuntimeError("interrupted")
        return real(chunk)

    monkeypatch.setattr(index, "_check_chunk", failing)
    with pytest.raises(RuntimeError):
        index.check(["a first new task", "a second new task"])
    assert len(index) == len(index._postings) == 2
    index.truncate(1)
    assert len(index._postings) == 1
    [v] = real(["write poems now"])
    assert v[0].max_score == 0.0  # gone from the postings too, not only from the pool


def test_length_ratio_bound_is_the_largest_f1_reachable_at_that_ratio():
    for t in (0.3, 0.5, 0.7, 0.9):
        r = length_ratio_bound(t)
        assert 2 * r / (1 + r) == pytest.approx(t)
        # Every pair of lengths whose best possible F1 (the shorter one a subsequence) exceeds t
        # has a length ratio above the bound.
        for short in range(1, 40):
            for long in range(short, 60):
                if 2 * short / (short + long) > t:
                    assert short / long > r


def test_search_alone_matches_a_full_row_on_repeated_tokens():
    postings = TokenPostings()
    pool = ["aab", "aba", "bbb", "abab", "", "ba"]
    for code in pool:
        postings.add(code)
    search = PrunedSearch(postings, pool, workers=1)
    scores, index = search.top(["ab", "aaa", ""], 6)
    assert index[2].tolist() == [0, 1, 2, 3, 4, 5] and scores[2].tolist() == [0.0] * 6
    assert index[1].tolist()[:3] == [0, 1, 3]  # "aab" and "aba" share two a's, "abab" two of four


# -- memory ------------------------------------------------------------------------------------------


def test_pruned_novelty_memory_stays_under_a_bound_for_a_large_pool():
    rng = random.Random(9)
    words = ["the", "a", "of"] * 20 + [f"w{i}" for i in range(5000)]
    index = RougeNoveltyIndex(threshold=0.7, neighbors_kept=10)
    index.add([sentence(rng, words, 5, 20) for _ in range(200_000)])
    candidates = [sentence(rng, words, 5, 20) for _ in range(300)]
    tracemalloc.start()
    got = index.check(candidates, add=False)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(got) == 300 and all(len(v.neighbors) == 10 for v in got)
    # A candidates x pool float64 matrix would be 300 x 200,000 x 8 bytes = 458 MiB; the search
    # holds a few pool-length counters per thread and the pairs it scores.
    assert peak < 48 * 2**20


# -- a whole run -----------------------------------------------------------------------------------


def self_instruct_records(tmp_path, monkeypatch, prune: bool) -> list[str]:
    import polars as pl

    from synth.engines import ScriptedEngine
    from synth.flows.self_instruct import run_self_instruct
    from synth.generators import self_instruct
    from synth.schemas import DatasetConfig, ScriptedEngineConfig, SelfInstructConfig
    from synth.shards import scan
    from tests.conftest import SelfInstructScript

    class Overlapping(SelfInstructScript):
        """Tasks over a small vocabulary: many score above the threshold, many tie."""

        def next_task(self) -> str:
            self.counter += 1
            rng = random.Random(self.counter)
            kind = "label" if self.counter % 3 == 0 else "explain"
            words = ["river", "delta", "map", "poem", "list", "three", "why", "cats", "rain", "fog"]
            return f"Please {kind} the " + " ".join(rng.choices(words, k=rng.randint(4, 7)))

    monkeypatch.setattr(self_instruct, "RougeNoveltyIndex", functools.partial(RougeNoveltyIndex, prune=prune))
    path = tmp_path / ("pruned" if prune else "unpruned")
    run_self_instruct(
        SelfInstructConfig(num_records=40, prompts_per_batch=4, seed=7),
        ScriptedEngineConfig(),
        DatasetConfig(path=str(path)),
        model=ScriptedEngine(Overlapping(per_prompt=4)),
        batch_retries=0,
    )
    columns = ["id", "batch", "instruction", "input", "output", "novelty_rouge_l", "novelty_neighbors"]
    kept = scan(path).select(columns).collect()
    rejects = scan(path, "rejects").select([*columns, "stage", "reason", "detail"]).collect()
    assert rejects.filter(pl.col("stage") == "novelty").height > 0  # the run did reject near-duplicates
    return sorted(json.dumps(row) for row in kept.rows()) + sorted(json.dumps(row) for row in rejects.rows())


@pytest.mark.usefixtures("prefect_harness")
def test_a_fixed_seed_self_instruct_run_writes_the_same_records_with_and_without_pruning(tmp_path, monkeypatch):
    pruned = self_instruct_records(tmp_path, monkeypatch, prune=True)
    assert pruned == self_instruct_records(tmp_path, monkeypatch, prune=False)
