"""Exact top-k ROUGE-L search over a pool that scores only the pool texts that could reach the top k.

Texts are token strings (one character per token id, see `novelty.RougeNoveltyIndex`), and
ROUGE-L F1 of a and b is F = 2·LCS/(|a|+|b|), computed by rapidfuzz as 1 - (|a|+|b|-2·LCS)/(|a|+|b|).

Two bounds decide which pairs are scored:

- Length ratio. LCS <= min(|a|, |b|), so with r = min/max of the two lengths,
  F <= 2·min/(min+max) = 2r/(1+r). So F > t needs 2r/(1+r) > t, i.e. r > t/(2-t) (for t = 0.7:
  r > 0.538). `length_ratio_bound` says so; the overlap bound below implies it, because the overlap
  is itself at most min(|a|, |b|).
- Overlap. Every pair of tokens an LCS matches is a common token, used at most as often as either
  text holds it, so LCS <= overlap = sum over tokens of min(count in a, count in b). Counting the
  j-th occurrence of a token as a key of its own, (token, j), turns that multiset overlap into the
  number of keys the two texts share, which one pass over an inverted index of keys counts for the
  whole pool at once. The bound U = 1 - (|a|+|b|-2·overlap)/(|a|+|b|) is computed with the very
  float operations rapidfuzz uses for the score, and those are monotone in the LCS, so U >= F holds
  exactly in floating point, not only in real numbers.

A query's top k (score descending, ties to the lower pool index, as a full score row sorts them) is
found in two steps: score the pool texts of highest U first, which gives a k-th best score L; then
score every other text with U >= L. A text left out has F <= U < L <= the final k-th best, so it
cannot be in the top k, ties included. A text sharing no key has F = 0 exactly (an LCS of length 0,
or an empty text), so when fewer than k texts share a key the top k is topped up with the lowest
pool indices among those, with score 0, without scoring them: exactly what a full row gives.
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import Indel

# Scored first, by highest bound, to find the level that prunes the rest.
FIRST_PICKS = 64
# At most this many pairs of one query are scored in one call (memory: 8 bytes each and the list).
MAX_QUERY_CELLS = 1 << 16


def length_ratio_bound(threshold: float) -> float:
    """F > threshold needs shorter/longer length > this: 2r/(1+r) > t  <=>  r > t/(2-t)."""
    return threshold / (2.0 - threshold)


class TokenPostings:
    """An inverted index over a pool's token multisets: for each (token, occurrence) key, the
    ascending pool indices of the texts holding it, in a compact int32 array. Memory is 4 bytes
    per pool token plus a small array per distinct key."""

    def __init__(self) -> None:
        self._key: dict[tuple[str, int], int] = {}
        self._postings: list[array[int]] = []
        self._lengths: array[int] = array("i")

    def __len__(self) -> int:
        return len(self._lengths)

    def _keys(self, code: str, create: bool) -> list[int]:
        seen: dict[str, int] = {}
        keys: list[int] = []
        for token in code:
            j = seen.get(token, 0)
            seen[token] = j + 1
            key = self._key.get((token, j))
            if key is None:
                if not create:
                    continue
                key = self._key[(token, j)] = len(self._postings)
                self._postings.append(array("i"))
            keys.append(key)
        return keys

    def add(self, code: str) -> None:
        doc = len(self._lengths)
        for key in self._keys(code, True):
            self._postings[key].append(doc)
        self._lengths.append(len(code))

    def truncate(self, size: int, removed: Sequence[str]) -> None:
        """Forget pool texts `size` and after; `removed` are their codes, in pool order."""
        for code in reversed(removed):
            for key in self._keys(code, False):
                self._postings[key].pop()
        del self._lengths[size:]

    def overlap(self, code: str) -> np.ndarray | None:
        """The multiset token overlap of `code` with every pool text (None: it shares no key)."""
        keys = self._keys(code, False)
        if not keys:
            return None
        parts = [np.frombuffer(self._postings[key], dtype=np.int32) for key in keys]
        return np.bincount(np.concatenate(parts), minlength=len(self._lengths))

    def lengths(self) -> np.ndarray:
        return np.array(self._lengths, dtype=np.int64)


class PrunedSearch:
    """Each query's exact top-k ROUGE-L pool scores, scoring only the pairs the bounds keep.

    `scored` counts the pairs scored exactly, `pairs` the pairs a full row would have scored.
    Queries are searched on `workers` threads (-1: every core); each query's search is
    independent, and numpy and rapidfuzz release the GIL in their loops.
    """

    def __init__(self, postings: TokenPostings, pool: list[str], workers: int = -1) -> None:
        self.postings = postings
        self.pool = pool
        self.threads = (os.cpu_count() or 1) if workers < 1 else workers
        self.scored = 0
        self.pairs = 0

    def top(self, queries: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, pool indices) of shape (len(queries), k), best first; -1.0 and -1 fill rows
        when the pool holds fewer than k texts."""
        top_scores = np.full((len(queries), k), -1.0)
        top_index = np.full((len(queries), k), -1, dtype=np.int64)
        if not queries or not self.pool:
            return top_scores, top_index
        lengths = self.postings.lengths()
        if self.threads > 1 and len(queries) > 1:
            with ThreadPoolExecutor(self.threads) as pool:
                results = list(pool.map(lambda q: self._one(q, lengths, k), queries))
        else:
            results = [self._one(q, lengths, k) for q in queries]
        for i, (scores, index, scored) in enumerate(results):
            top_scores[i, : scores.size] = scores
            top_index[i, : index.size] = index
            self.scored += scored
        self.pairs += len(queries) * len(self.pool)
        return top_scores, top_index

    def _score(self, query: str, index: np.ndarray) -> np.ndarray:
        out = np.empty(index.size)
        for start in range(0, index.size, MAX_QUERY_CELLS):
            part = index[start : start + MAX_QUERY_CELLS]
            choices = [self.pool[j] for j in part.tolist()]
            out[start : start + part.size] = process.cdist(
                [query], choices, scorer=Indel.normalized_similarity, processor=None, workers=1, dtype=np.float64
            )[0]
        return out

    def _one(self, query: str, lengths: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, int]:
        overlap = self.postings.overlap(query) if query else None
        if overlap is None:
            index = np.arange(min(k, lengths.size), dtype=np.int64)
            return np.zeros(index.size), index, 0
        # First, the texts of largest overlap: at least `picks` of them when that many share a key.
        picks = max(FIRST_PICKS, k)
        at_least = np.cumsum(np.bincount(overlap)[::-1])[::-1]  # [c]: texts with overlap >= c
        shared = int(at_least[1]) if at_least.size > 1 else 0
        floor = max(1, int(np.flatnonzero(at_least >= picks)[-1])) if shared >= picks else 1
        first = np.flatnonzero(overlap >= floor)
        if first.size > 4 * picks:  # many ties at the floor: the highest bounds among them
            first = first[np.argpartition(-self._bound(query, first, overlap, lengths), picks - 1)[:picks]]
        scores = self._score(query, first)
        index = first
        if shared > first.size:
            # `picks` >= k scores are in hand: their k-th best is a floor of the final k-th best.
            level = float(np.partition(scores, scores.size - k)[scores.size - k])
            # Overlap <= the other text's length, so U <= 2·o/(|q|+o), which is >= level only when
            # o >= level·|q|/(2-level); the margin keeps that test on the safe side of rounding.
            needed = max(1, int(np.ceil(level * len(query) / (2.0 - level) - 1e-6)))
            more = np.flatnonzero(overlap >= needed)
            more = more[self._bound(query, more, overlap, lengths) >= level]
            more = more[~np.isin(more, first)]
            scores = np.concatenate([scores, self._score(query, more)])
            index = np.concatenate([index, more])
        scored = index.size
        order = np.lexsort((index, -scores))[:k]
        scores, index = scores[order], index[order]
        if index.size < k:  # fewer than k texts share a token: the rest score 0, lowest index first
            zeros = np.flatnonzero(overlap == 0)[: k - index.size]
            scores = np.concatenate([scores, np.zeros(zeros.size)])
            index = np.concatenate([index, zeros])
        return scores, index, scored

    @staticmethod
    def _bound(query: str, index: np.ndarray, overlap: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """U for the pool texts `index`: rapidfuzz's score formula with the overlap as the LCS."""
        total = lengths[index] + len(query)
        return 1.0 - (total - 2 * overlap[index]) / total
