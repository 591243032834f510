"""The selection algorithms on arrays: order, ties, budgets larger than the data, diversity rules."""

from __future__ import annotations

import numpy as np
import pytest

from synth.selection.selectors import (
    diversity,
    nearest_distances,
    select_deita,
    select_ifd,
    select_kcenter,
    select_longest,
    select_random,
)


def unit(*angles_deg: float) -> np.ndarray:
    """2-d unit vectors at the given angles (cosine distance between a and b is 1 - cos(a - b))."""
    radians = np.radians(angles_deg)
    return np.stack([np.cos(radians), np.sin(radians)], axis=1)


def test_longest_takes_the_highest_token_counts_ties_by_index():
    picked = select_longest(np.array([5, 9, 7, 9, 1]), budget=3)
    assert picked.indices.tolist() == [1, 3, 2]
    assert np.isnan(picked.distances).all()


def test_budget_larger_than_the_data_takes_everything():
    assert sorted(select_longest(np.array([3, 1, 2]), budget=10).indices.tolist()) == [0, 1, 2]
    assert sorted(select_random(4, budget=10, seed=1).indices.tolist()) == [0, 1, 2, 3]
    assert sorted(select_kcenter(unit(0, 90, 180), budget=10).indices.tolist()) == [0, 1, 2]
    assert sorted(select_deita(np.array([1.0, 2.0]), unit(0, 90), budget=10).indices.tolist()) == [0, 1]


def test_ifd_takes_the_highest_below_one_and_never_one_or_more():
    ifd = np.array([0.5, 1.2, 0.9, 1.0, 0.9, np.nan, 0.1])
    assert select_ifd(ifd, budget=3).indices.tolist() == [2, 4, 0]
    assert select_ifd(ifd, budget=100).indices.tolist() == [2, 4, 0, 6]


def test_random_is_seeded():
    a, b = select_random(100, 10, seed=3), select_random(100, 10, seed=3)
    assert a.indices.tolist() == b.indices.tolist()
    assert a.indices.tolist() != select_random(100, 10, seed=4).indices.tolist()
    assert len(set(a.indices.tolist())) == 10


def test_deita_goes_by_score_and_refuses_records_too_close_to_a_selected_one():
    # 0 and 1 are 5 degrees apart (distance 0.0038), 2 is far from both.
    embeddings = unit(0, 5, 90)
    scores = np.array([3.0, 4.0, 1.0])
    picked = select_deita(scores, embeddings, budget=3, threshold=0.1)
    assert picked.indices.tolist() == [1, 2]
    assert picked.refused.tolist() == [True, False, False]
    assert np.isnan(picked.distances[0]) and picked.distances[1] == pytest.approx(1 - np.cos(np.radians(85)), abs=1e-6)
    # With no threshold the close record is admitted, after the far one is not needed first: by score.
    assert select_deita(scores, embeddings, budget=3, threshold=0.0).indices.tolist() == [1, 0, 2]


def test_deita_ties_go_to_the_lower_index_and_blocks_do_not_change_the_result():
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(300, 8))
    scores = rng.integers(1, 4, size=300).astype(float)  # many ties
    whole = select_deita(scores, embeddings, budget=40, threshold=0.3, block=1000)
    small = select_deita(scores, embeddings, budget=40, threshold=0.3, block=7)
    assert whole.indices.tolist() == small.indices.tolist()
    np.testing.assert_allclose(whole.distances[1:], small.distances[1:], rtol=1e-5)
    # Selection order follows the score, ties by index.
    chosen = whole.indices
    keys = list(zip(-scores[chosen], chosen, strict=True))
    assert keys == sorted(keys)
    # Every admitted record is farther than the threshold from each one admitted before it.
    units = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    for k in range(1, len(chosen)):
        sims = units[chosen[:k]] @ units[chosen[k]]
        assert 1 - sims.max() > 0.3
        assert whole.distances[k] == pytest.approx(1 - sims.max(), abs=1e-5)


def test_kcenter_picks_the_farthest_record_each_step():
    embeddings = unit(0, 10, 20, 90, 180, 185)
    picked = select_kcenter(embeddings, budget=3, seed=0)
    first = picked.indices[0]
    rest = picked.indices[1:].tolist()
    # From any start, the next two centers cover the three clusters (0-20, 90, 180-185).
    clusters = {0: 0, 1: 0, 2: 0, 3: 1, 4: 2, 5: 2}
    assert {clusters[i] for i in [first, *rest]} == {0, 1, 2}
    # Distances at selection never increase (greedy farthest-first).
    assert picked.distances[1] >= picked.distances[2]
    assert select_kcenter(embeddings, 3, seed=0).indices.tolist() == picked.indices.tolist()


def test_kcenter_ties_go_to_the_lower_index():
    embeddings = unit(0, 90, 90, 90)
    firsts = set()
    for seed in range(20):
        first, second = select_kcenter(embeddings, budget=2, seed=seed).indices.tolist()
        firsts.add(first)
        # Three records are equally far from center 0: the lowest index wins.
        assert second == (1 if first == 0 else 0)
    assert 0 in firsts and len(firsts) > 1


def test_nearest_distances_and_diversity():
    embeddings = unit(0, 0, 90)
    d = nearest_distances(embeddings, block=2)
    assert d[0] == pytest.approx(0, abs=1e-6) and d[1] == pytest.approx(0, abs=1e-6) and d[2] == pytest.approx(1)
    assert diversity(unit(0, 90, 180)) > diversity(unit(0, 1, 2))
