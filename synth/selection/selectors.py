"""The selection algorithms, on arrays: which candidates to take for a budget, in which order.

Every selector takes candidates by index and returns a `Selection` (indices in selection order,
and for embedding-based methods each one's cosine distance to the nearest record selected before
it). Ties always go to the lower index: callers pass candidates in a fixed order (by record id), so
a selection never depends on the order shards were read in. A budget at least as large as the
eligible candidates takes them all.

References and costs (N candidates, k the budget, d the embedding size):
- `deita`: Liu et al. 2024 (Deita), score-first diversity-aware selection: sort by complexity x
  quality, admit a record only if its cosine distance to every selected one exceeds a threshold.
  O(M k d) for the M candidates examined before the budget fills.
- `ifd`: Li et al. 2024, the highest instruction-following difficulty below 1. O(N log N).
- `longest`: Zhao et al. 2024 ("Long Is More"), the longest responses. O(N log N).
- `kcenter`: Sener & Savarese 2018, greedy k-center (each step the candidate farthest from the
  selected set). O(N k d).
- `random`: a seeded uniform draw, the baseline. O(N).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from synth.selection.embeddings import unit_rows


@dataclass
class Selection:
    """`indices` in selection order; `distances[i]` is the cosine distance of the i-th selected
    record to the nearest one selected before it (NaN for the first, or where no embeddings were
    used). `refused` marks candidates a diversity rule turned away (deita's threshold)."""

    indices: np.ndarray
    distances: np.ndarray
    refused: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))


def _ranked(values: np.ndarray) -> np.ndarray:
    """Indices by value, highest first, ties by index."""
    values = np.asarray(values, dtype=np.float64)
    return np.lexsort((np.arange(len(values)), -values))


def _no_distances(indices: np.ndarray) -> Selection:
    return Selection(indices=indices, distances=np.full(len(indices), np.nan))


def top(values: np.ndarray, budget: int, eligible: np.ndarray | None = None) -> Selection:
    """The `budget` highest values among the eligible candidates (NaN is never eligible)."""
    values = np.asarray(values, dtype=np.float64)
    ok = ~np.isnan(values) if eligible is None else eligible & ~np.isnan(values)
    order = _ranked(np.where(ok, values, -np.inf))
    return _no_distances(order[: min(budget, int(ok.sum()))])


def select_ifd(ifd: np.ndarray, budget: int) -> Selection:
    """The highest IFD below 1 (at or above 1 the instruction does not help the response)."""
    ifd = np.asarray(ifd, dtype=np.float64)
    return top(ifd, budget, eligible=ifd < 1.0)


def select_longest(tokens: np.ndarray, budget: int) -> Selection:
    return top(tokens, budget)


def select_random(n: int, budget: int, seed: int) -> Selection:
    order = np.random.default_rng(seed).permutation(n)
    return _no_distances(order[: min(budget, n)])


def select_deita(
    scores: np.ndarray, embeddings: np.ndarray, budget: int, threshold: float = 0.1, block: int = 512
) -> Selection:
    """Score-first, diversity-aware: candidates by score (highest first, ties by index); one is
    admitted when its cosine distance to every record admitted before it exceeds `threshold`.

    Exactly the sequential rule, computed a block of candidates at a time: one matrix product
    against what is already selected, then the block's own pairs in order."""
    scores = np.asarray(scores, dtype=np.float64)
    n = len(scores)
    unit = unit_rows(embeddings)
    order = _ranked(np.where(np.isnan(scores), -np.inf, scores))
    order = order[~np.isnan(scores[order])]
    budget = min(budget, len(order))
    chosen = np.empty((budget, unit.shape[1] if unit.ndim == 2 else 0), dtype=np.float32)
    indices: list[int] = []
    distances: list[float] = []
    refused = np.zeros(n, dtype=bool)
    limit = 1.0 - threshold  # admitted only if every similarity is below this
    for start in range(0, len(order), block):
        if len(indices) >= budget:
            break
        cand = order[start : start + block]
        vectors = unit[cand]
        if indices:
            best = (vectors @ chosen[: len(indices)].T).max(axis=1)
        else:
            best = np.full(len(cand), -np.inf, dtype=np.float32)
        within = vectors @ vectors.T
        admitted: list[int] = []  # positions in this block
        for j in range(len(cand)):
            nearest = float(best[j])
            if admitted:
                nearest = max(nearest, float(within[j, admitted].max()))
            if nearest >= limit and (indices or admitted):
                refused[cand[j]] = True
                continue
            admitted.append(j)
            distances.append(float("nan") if nearest == -np.inf else 1.0 - nearest)
            if len(indices) + len(admitted) >= budget:
                break
        chosen[len(indices) : len(indices) + len(admitted)] = vectors[admitted]
        indices.extend(int(cand[j]) for j in admitted)
    return Selection(np.asarray(indices, dtype=np.int64), np.asarray(distances), refused)


def select_kcenter(embeddings: np.ndarray, budget: int, seed: int = 0) -> Selection:
    """Greedy k-center on cosine distance: a seeded first center, then each step the candidate
    farthest from every center so far (ties by index). Diversity only; no score is read."""
    unit = unit_rows(embeddings)
    n = len(unit)
    budget = min(budget, n)
    if budget == 0:
        return _no_distances(np.zeros(0, dtype=np.int64))
    first = int(np.random.default_rng(seed).integers(n))
    indices = [first]
    distances = [float("nan")]
    nearest = 1.0 - unit @ unit[first]
    nearest[first] = -np.inf
    for _ in range(budget - 1):
        pick = int(np.argmax(nearest))
        indices.append(pick)
        distances.append(float(nearest[pick]))
        np.minimum(nearest, 1.0 - unit @ unit[pick], out=nearest)
        nearest[pick] = -np.inf  # centers stay at -inf: the minimum never raises them
    return Selection(np.asarray(indices, dtype=np.int64), np.asarray(distances))


def nearest_distances(embeddings: np.ndarray, block: int = 2048) -> np.ndarray:
    """Each row's cosine distance to the nearest other row (NaN for a single row), a block at a
    time so memory holds `block` x N similarities."""
    unit = unit_rows(embeddings)
    n = len(unit)
    out = np.full(n, np.nan)
    if n < 2:
        return out
    for start in range(0, n, block):
        sims = unit[start : start + block] @ unit.T
        rows = np.arange(sims.shape[0])
        sims[rows, start + rows] = -np.inf
        out[start : start + block] = 1.0 - sims.max(axis=1)
    return out


def diversity(embeddings: np.ndarray) -> float:
    """The mean cosine distance from each record to its nearest neighbour in the set (higher is
    more diverse); NaN for fewer than two records."""
    distances = nearest_distances(embeddings)
    return float(np.nanmean(distances)) if len(distances) > 1 else float("nan")
