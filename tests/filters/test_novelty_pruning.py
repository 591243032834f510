"""Pruned ROUGE-L novelty against scoring every pair (`prune=False`, the reference): the same verdicts,
the same best score whenever it is above the floor, the same neighbours above the floor, and the
same records from a whole Self-Instruct run; and memory bounded by the chunk, not by the pool."""

from __future__ import annotations

import functools
import json
import math
import random
import tracemalloc

import pytest

from synth.filters import RougeNoveltyIndex, rouge_l, rouge_tokens
from synth.filters import novelty_index as search
from synth.filters.novelty import neighbor_ref
from synth.filters.novelty_index import PrefixIndex, length_ratio_bound, need, prefix_length, sorted_keys


def verdicts(pool: list[str], candidates: list[str], prune: bool, **kw) -> list:
    index = RougeNoveltyIndex(prune=prune, **kw)
    index.add(pool)
    out = index.check(candidates)
    # The kept candidates joined the pool: a second call sees the same pool on both paths.
    return out + index.check(candidates[::-1], add=False)


def above(v, floor: float) -> list[tuple[str, float]]:
    return [(n, s) for n, s in zip(v.neighbors, v.neighbor_scores, strict=True) if s > floor]


def assert_same(pool: list[str], candidates: list[str], **kw) -> None:
    """Pruned against unpruned: verdicts always equal; the best score equal when the true best is
    above the floor, else a true score no higher; the neighbours above the floor equal (names,
    scores, order); every neighbour's score its true score."""
    floor = min(kw.get("threshold", 0.7), kw.get("neighbor_floor", 0.7))
    pruned, full = verdicts(pool, candidates, True, **kw), verdicts(pool, candidates, False, **kw)
    texts = {neighbor_ref(t): t for t in pool + candidates}
    assert len(pruned) == len(full)
    for p, f in zip(pruned, full, strict=True):
        assert (p.text, p.kept) == (f.text, f.kept)
        if f.max_score > floor:
            assert p.max_score == f.max_score
        else:
            assert p.max_score <= f.max_score
        assert above(p, floor) == above(f, floor)
        for name, score in zip(p.neighbors, p.neighbor_scores, strict=True):
            assert score == pytest.approx(rouge_l(rouge_tokens(p.text), rouge_tokens(texts[name])), abs=1e-12)
        assert p.neighbor_scores == sorted(p.neighbor_scores, reverse=True)


def sentence(rng: random.Random, words: list[str], low: int = 0, high: int = 12) -> str:
    return " ".join(rng.choice(words) for _ in range(rng.randint(low, high)))


def near_copy(rng: random.Random, text: str, words: list[str]) -> str:
    tokens = text.split() or [rng.choice(words)]
    for _ in range(rng.randint(0, 2)):
        tokens[rng.randrange(len(tokens))] = rng.choice(words)
    if rng.random() < 0.3:
        tokens.insert(rng.randrange(len(tokens) + 1), rng.choice(words))
    return " ".join(tokens)


@pytest.mark.parametrize("seed", range(8))
def test_pruned_equals_unpruned_on_random_text_with_near_duplicates(seed):
    rng = random.Random(seed)
    # A few very common words (as "the"), many rare ones, and repeats within a text.
    words = ["the", "a", "of", "to"] * 6 + [f"w{i}" for i in range(60)]
    pool = [sentence(rng, words, 1, 16) for _ in range(300)]
    pool += [near_copy(rng, rng.choice(pool), words) for _ in range(200)]
    candidates = [sentence(rng, words, 0, 16) for _ in range(60)]
    candidates += [near_copy(rng, rng.choice(pool), words) for _ in range(60)]
    rng.shuffle(candidates)
    assert_same(
        pool,
        candidates,
        threshold=rng.choice([0.5, 0.7, 0.7, 0.9]),
        neighbor_floor=rng.choice([0.3, 0.5, 0.7]),
        neighbors_kept=rng.choice([1, 3, 10]),
    )


@pytest.mark.parametrize("seed", range(3))
def test_pruned_equals_unpruned_on_chinese_empty_duplicate_and_tied_texts(seed):
    rng = random.Random(11 + seed)
    cjk = list("的一是不了人我在有他这为之大来以个中上们写首诗歌")
    pool = ["".join(rng.choices(cjk, k=rng.randint(0, 15))) for _ in range(200)]
    pool += ["".join(near_copy(rng, " ".join(rng.choice(pool)), cjk).split()) for _ in range(100)]
    pool += ["", "!!!", "。", "写一首诗", "写一首诗", "a b c d", "d c b a", "a a a a b", "b a a a a"]
    pool += ["w1 w2 w3 w4 w5 w6 w7 x1 x2 x3"] * 3  # exact ties with a candidate at 0.7
    candidates = ["", "???", "写一首诗", "写一首歌", "a b c d", "a a b", "w1 w2 w3 w4 w5 w6 w7 y1 y2 y3"]
    candidates += ["".join(rng.choices(cjk, k=rng.randint(0, 15))) for _ in range(40)]
    candidates += ["".join(near_copy(rng, " ".join(rng.choice(pool)), cjk).split()) for _ in range(40)]
    candidates += candidates[:10]  # repeats within one call
    for k in (1, 10, 300):
        assert_same(pool, candidates, threshold=0.7, neighbors_kept=k)


def test_pruned_equals_unpruned_across_chunks_and_on_tiny_pools(monkeypatch):
    from synth.filters import novelty

    monkeypatch.setattr(novelty, "CHECK_CHUNK", 7)
    rng = random.Random(2)
    words = [f"w{i}" for i in range(12)]
    pool = [sentence(rng, words, 1, 8) for _ in range(100)]
    candidates = [sentence(rng, words, 1, 8) for _ in range(50)]
    candidates += [near_copy(rng, c, words) for c in candidates[:30]]
    assert_same(pool, candidates, neighbor_floor=0.4)
    assert_same(["alpha beta", "gamma delta", "", "epsilon", "alpha"], ["alpha", "zeta eta", "", "alpha beta gamma"])
    assert_same([], ["alpha", "", "alpha beta", "alpha beta"])


def reference_examined(index: PrefixIndex, q: str, pool_codes: list[str]) -> list[int]:
    """`PrefixIndex.examined` as its docstring states it, one pool text at a time in plain Python."""
    n = len(q)
    if not n:
        return []
    f = index.floor - search.MARGIN
    keys = index.prefix(q)
    skipped = 4 * min(max(0, math.floor(f * n / (2.0 - f) - search.MARGIN)) >> 2, search.BUCKETS - 1)
    need_n = max(need(n, index.floor), skipped + 1)
    out = []
    for j, c in enumerate(pool_codes):
        m = len(c)
        if m >= min(search.LONG, search.CAP):
            out.append(j)
            continue
        where = {k: p for p, k in enumerate(index.prefix(c))}
        # (keys after it in q, keys after it in c) of each hit the index reads, in q's order.
        hits = [(n - 1 - i, m - 1 - where[k]) for i, k in enumerate(keys) if k in where]
        hits = [(ql, left) for ql, left in hits if left >= skipped]
        if not hits or not 2.0 * (1 + min(hits[0])) / (m + n) > f:
            continue
        after = min(*hits[-1], max(need_n, need(m, index.floor)) - 1)
        if 2.0 * (len(hits) + after) / (m + n) > f:
            out.append(j)
    return out


def test_examined_texts_follow_the_stated_bounds_and_cover_every_pair_above_the_floor(monkeypatch):
    """The texts a query examines are those the method's tests pass (a plain reference, one pool
    text at a time), sorted; they include every pool text scoring above the floor and every text of
    LONG tokens or more, and at 0.7 fewer than half the texts sharing a prefix key. Lengths run from
    1 to 60 and near copies keep pairs close to the floor."""
    rng = random.Random(7)
    words = ["the", "a"] * 5 + [f"w{i}" for i in range(25)]
    pool = [sentence(rng, words, 1, 60) for _ in range(500)]
    pool += [near_copy(rng, rng.choice(pool), words) for _ in range(300)]
    queries = [near_copy(rng, rng.choice(pool), words) for _ in range(80)] + [
        sentence(rng, words, 1, 60) for _ in range(40)
    ]
    vocab: dict[str, int] = {}

    def code(text: str) -> str:
        return "".join(chr(vocab.setdefault(t, len(vocab)) + 64) for t in rouge_tokens(text))

    pool_codes, query_codes = [code(t) for t in pool], [code(t) for t in queries]
    for long in (search.CAP, 30):
        monkeypatch.setattr(search, "LONG", long)
        for floor in (0.35, 0.7):
            index = PrefixIndex(floor)
            for c in pool_codes:
                index.add(c)
            prefixes = [set(index.prefix(c)) for c in pool_codes]
            examined = sharing = 0
            for q in query_codes:
                found = index.examined(q).tolist()
                assert found == reference_examined(index, q, pool_codes)
                truly = {j for j, c in enumerate(pool_codes) if c and q and rouge_l(q, c) > floor}
                assert truly <= set(found), (floor, long, q)
                keys = set(index.prefix(q))
                share = {j for j, p in enumerate(prefixes) if p & keys}
                longs = {j for j, c in enumerate(pool_codes) if len(c) >= long}
                if q:
                    assert longs <= set(found)
                examined, sharing = examined + len(set(found) - longs), sharing + len(share - longs)
            # The overlap bounds prune: most of a query's key-sharing texts go unscored at 0.7.
            assert examined < sharing * (0.5 if floor == 0.7 else 0.9)


def test_prefix_filter_finds_every_pair_above_the_floor_at_every_length():
    """Pairs built to sit just above the floor (the shorter text a subsequence of the longer) are
    found for every pair of lengths up to 40, at thresholds where rounding is close."""
    for floor in (0.3, 0.5, 0.6, 0.7, 0.75, 0.9):
        for n in range(1, 41):
            for m in range(n, 41):
                for shared in range(n, 0, -1):
                    if 2 * shared / (n + m) <= floor:
                        break
                    # a: `shared` common tokens then its own; b: the common ones then its own.
                    common = "".join(chr(0x4E00 + t) for t in range(shared))
                    a = common + "".join(chr(0x5000 + t) for t in range(n - shared))
                    b = common + "".join(chr(0x6000 + t) for t in range(m - shared))
                    index = PrefixIndex(floor)
                    index.add(b)
                    assert index.examined(a).tolist() == [0], (floor, n, m, shared)


def test_need_and_prefix_length_are_safe_against_the_exact_bound():
    for floor in (0.0, 0.25, 0.5, 0.7, 0.9, 1.0):
        for n in range(0, 60):
            k = need(n, floor)
            # An overlap below need(n) cannot give F1 above the floor even with the longest partner
            # it allows (o <= |b|): 2·o/(n+o) <= floor.
            assert 2 * (k - 1) / (n + k - 1) <= floor + 1e-12 if n + k - 1 > 0 else True
            assert prefix_length(n, floor) == max(0, n - k + 1)


def test_sorted_keys_number_repeated_tokens_and_follow_the_global_order():
    assert sorted_keys("abcab") == [
        ord("c") << 32,
        ord("b") << 32 | 1,
        ord("b") << 32,
        ord("a") << 32 | 1,
        ord("a") << 32,
    ]
    assert sorted_keys("") == []


def test_a_pool_rebuilt_from_its_tasks_searches_as_the_live_one_did():
    """Token ids (the key order) come from the pool's texts only, never from rejected candidates,
    so a resumed run, which rebuilds the pool from its committed tasks, lists the same neighbours
    (below the floor too) as the live run."""
    rng = random.Random(3)
    words = [f"w{i}" for i in range(40)]
    seeds = [sentence(rng, words, 3, 10) for _ in range(50)]
    live = RougeNoveltyIndex()
    live.add(seeds)
    committed: list[str] = []
    for batch in range(4):
        fresh = [f"new{batch}x{i}" for i in range(30)]
        candidates = [near_copy(rng, rng.choice(seeds), words) + f" {rng.choice(fresh)}" for _ in range(20)]
        candidates += [sentence(rng, fresh + words, 3, 10) for _ in range(20)]
        kept = [v.text for v in live.check(candidates, add=False) if v.kept]
        assert len(kept) < len(candidates)
        live.add(kept)
        committed += kept
    resumed = RougeNoveltyIndex()
    resumed.add(seeds + committed)
    assert resumed._vocab == live._vocab
    later = [sentence(rng, words + [f"new{b}x{i}" for b in range(4) for i in range(30)], 3, 10) for _ in range(60)]
    later += [near_copy(rng, t, words) for t in committed[:40]]
    assert [(v.kept, v.max_score, v.neighbors, v.neighbor_scores) for v in live.check(later)] == [
        (v.kept, v.max_score, v.neighbors, v.neighbor_scores) for v in resumed.check(later)
    ]


def test_pruning_scores_few_pairs_when_most_share_little():
    rng = random.Random(4)
    words = [f"w{i}" for i in range(3000)]
    index = RougeNoveltyIndex(threshold=0.7)
    index.add([sentence(rng, words, 5, 15) for _ in range(5000)])
    index.check([sentence(rng, words, 5, 15) for _ in range(20)], add=False)
    assert 20 * 5000 <= index.search.pairs <= 20 * 5020  # the pool, and the candidates kept before
    assert index.search.scored < index.search.pairs / 100


def test_check_without_add_truncate_and_a_failed_check_leave_the_postings_with_the_pool(monkeypatch):
    index = RougeNoveltyIndex(threshold=0.7)
    index.add(["tell me a joke", "write poems now"])
    vocab = dict(index._vocab)
    index.check(["a brand new task", "another brand new task"], add=False)
    assert len(index) == len(index._postings) == 2
    assert index._vocab == vocab  # nor did the kept candidate's new words stay
    index.check(["a brand new task", "something else entirely"])
    assert len(index) == len(index._postings) == 4
    index.truncate(2)
    calls = []
    real = index._check_one

    def failing(text):
        calls.append(text)
        if len(calls) == 2:
            raise RuntimeError("interrupted")
        return real(text)

    monkeypatch.setattr(index, "_check_one", failing)
    with pytest.raises(RuntimeError):
        index.check(["a first new task", "a second new task"])
    assert len(index) == len(index._postings) == 2
    assert index._vocab == vocab
    index.truncate(1)
    assert len(index._postings) == 1
    [v] = index.check(["write poems now"], add=False)
    assert v.max_score == 0.0 and v.kept  # gone from the postings too, not only from the pool


def test_length_ratio_bound_is_the_largest_f1_reachable_at_that_ratio():
    for t in (0.3, 0.5, 0.7, 0.9):
        r = length_ratio_bound(t)
        assert 2 * r / (1 + r) == pytest.approx(t)
        for short in range(1, 40):
            for long in range(short, 60):
                if 2 * short / (short + long) > t:
                    assert short / long > r


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
    assert len(got) == 300
    # A candidates x pool float64 matrix would be 300 x 200,000 x 8 bytes = 458 MiB; the search
    # holds one pool-length array of marks and the pairs it scores.
    assert peak < 16 * 2**20


# -- a whole run -----------------------------------------------------------------------------------


def self_instruct_records(tmp_path, monkeypatch, prune: bool) -> tuple[dict, dict]:
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
            words = ["river", "delta", "poem", "list", "three", "why", "cats", "rain", "fog", "snow", "wind"]
            return f"Please {kind} the " + " ".join(rng.choices(words, k=rng.randint(4, 9)))

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
    same = [c for c in rejects.columns if not c.startswith("novelty_")]
    kept_rows = sorted(json.dumps(r) for r in kept.select(columns[:5]).rows())
    reject_rows = sorted(json.dumps(r) for r in rejects.select(same).rows())
    novelty = {
        json.dumps(r[:-2]): r[-2:]
        for r in kept.select([*columns[:5], *columns[5:]]).rows() + rejects.select([*same, *columns[5:]]).rows()
    }
    return {"kept": kept_rows, "rejects": reject_rows}, novelty


@pytest.mark.usefixtures("prefect_harness")
def test_a_fixed_seed_self_instruct_run_writes_the_same_records_with_and_without_pruning(tmp_path, monkeypatch):
    pruned, pruned_novelty = self_instruct_records(tmp_path, monkeypatch, prune=True)
    full, full_novelty = self_instruct_records(tmp_path, monkeypatch, prune=False)
    assert pruned == full  # every kept record and every reject, field by field but the two below
    assert pruned_novelty.keys() == full_novelty.keys()
    for key, (score, neighbors) in full_novelty.items():
        got_score, got_neighbors = pruned_novelty[key]
        if score is None:
            assert got_score is None
        elif score > 0.7:  # above the floor: the same best score and nearest pool task
            assert got_score == score and got_neighbors[0] == neighbors[0]
        else:
            assert got_score <= score


# -- the frequency order ---------------------------------------------------------------------------


def postings_of(index: RougeNoveltyIndex) -> dict:
    p = index._postings
    return {
        "table": p._table,
        "from": p.order_from,
        "postings": {k: [list(b) if b else None for b in v] for k, v in p._postings.items()},
    }


@pytest.mark.parametrize("chunk", [7, 1 << 16])
def test_a_run_across_order_rebuilds_matches_the_full_search_and_a_pool_rebuilt_from_scratch(monkeypatch, chunk):
    """The key order is derived again at pool sizes 8, 16, 32...: a run crossing them (kept
    candidates joining mid-check, checks without `add` crossing one and rolling back) gives the
    verdicts, best scores and neighbours above the floor of scoring every pair, and a pool built
    from scratch from the same texts has the same order and postings and searches the same (the
    postings built `chunk` texts at a time, in numpy, equal those built one text at a time)."""
    monkeypatch.setattr(search, "BUILD_CHUNK", chunk)
    rng = random.Random(5)
    # Common words first seen late, so rarest-first differs from first-seen order.
    rare = [f"r{i}" for i in range(200)]
    common = ["the", "a", "of", "to", "in"]
    words = rare + common * 30

    def task() -> str:
        return " ".join(rng.choice(words[:40] if rng.random() < 0.2 else words) for _ in range(rng.randint(3, 14)))

    pruned, full = RougeNoveltyIndex(neighbor_floor=0.5), RougeNoveltyIndex(neighbor_floor=0.5, prune=False)
    texts = [" ".join(rng.choices(rare, k=6)) for _ in range(5)]
    pruned.add(texts)
    full.add(texts)
    rebuilds, crossed = pruned._postings.rebuilds, 0
    for batch in range(12):
        candidates = [task() for _ in range(25)]
        candidates += [near_copy(rng, rng.choice(texts), words) for _ in range(15)]
        add = batch % 3 != 1
        before, rebuilt = postings_of(pruned), pruned._postings.rebuilds
        got, want = pruned.check(candidates, add=add), full.check(candidates, add=add)
        for p, f in zip(got, want, strict=True):
            assert p.kept == f.kept
            if f.max_score > 0.5:
                assert p.max_score == f.max_score
            assert above(p, 0.5) == above(f, 0.5)
        if add:
            texts += [v.text for v in got if v.kept]
        else:
            assert postings_of(pruned) == before  # rolled back, order included
            kept = sum(v.kept for v in got)
            crossed += search.order_size(len(texts) + kept) > search.order_size(len(texts))
            # Each size crossed rebuilt the postings once; the roll-back restored the old ones.
            powers = (len(texts) + kept).bit_length() - len(texts).bit_length()
            assert pruned._postings.rebuilds - rebuilt == powers and pruned._postings._saved is None
        assert len(pruned) == len(full) == len(texts)
        assert pruned._postings.order_from == search.order_size(len(texts))
    assert pruned._postings.rebuilds - rebuilds >= 4 and len(texts) > 128 and crossed

    scratch = RougeNoveltyIndex(neighbor_floor=0.5)
    scratch.add(texts)
    assert postings_of(scratch) == postings_of(pruned)
    one_by_one = RougeNoveltyIndex(neighbor_floor=0.5)
    for t in texts:
        one_by_one.add([t])
    assert postings_of(one_by_one) == postings_of(pruned)
    later = [task() for _ in range(40)] + [near_copy(rng, t, words) for t in texts[-20:]]
    assert [(v.kept, v.max_score, v.neighbors, v.neighbor_scores) for v in pruned.check(later)] == [
        (v.kept, v.max_score, v.neighbors, v.neighbor_scores) for v in scratch.check(later)
    ]


def test_frequency_order_ranks_rarest_first_and_is_one_to_one():
    codes = ["abc", "ab", "a", "d", "", "ad"]
    table = search.frequency_order(codes)
    # document frequency: a 4, b 2, d 2, c 1: descending translated order is c, d, b, a
    order = sorted("abcd", key=lambda c: ord(c.translate(table)), reverse=True)
    assert order == ["c", "d", "b", "a"]
    images = [ord(chr(p).translate(table)) for p in range(200)]
    assert len(set(images)) == 200
    # Tokens the texts lack come before them all.
    assert all(ord(chr(p).translate(table)) > 3 for p in range(200) if chr(p) not in "abcd")
    assert search.order_size(0) == 0 and search.order_size(1) == 1 and search.order_size(1000) == 512
