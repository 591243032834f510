"""ROUGE-L search over a pool with prefix filtering: a candidate meets only the pool texts sharing
one of its first, rarest keys, and scores only those whose bounds leave room for a score above a
floor, so its work grows slowly with the pool (with the postings of the commoner words among its
first keys), not with candidates x pool.

Texts are token strings (one character per token id, see `novelty.RougeNoveltyIndex`), and
ROUGE-L F1 of a and b is F = 2·LCS/(|a|+|b|), computed by rapidfuzz as 1 - (|a|+|b|-2·LCS)/(|a|+|b|).

The bound. Every pair of tokens an LCS matches is a common token, used at most as often as either
text holds it, so LCS <= o, the multiset overlap. Counting the j-th occurrence of a token as a key
of its own, (token, j), makes o the number of keys the two texts share. F > f then needs
o > f·(|a|+|b|)/2 >= f·(|a|+o)/2 (o <= |b|), that is o > f·|a|/(2-f): a bound from a's length
alone, `need(|a|)`, and likewise for b.

Prefix filtering. Put every key in one fixed global order and sort each text's keys by it. If two
texts share o keys with o >= need(|a|) and o >= need(|b|), the first shared key in the order has
o-1 shared keys after it in each text, so it sits among a's first |a|-o+1 <= |a|-need(|a|)+1 keys
and among b's first |b|-need(|b|)+1. So the pool is indexed by its texts' prefixes only, a
candidate looks up its own prefix, and every pool text with F > f is among the texts it finds.
Those are then checked against overlap bounds (`PrefixIndex.examined`) and the rest scored exactly
by rapidfuzz, as the full path scores them, so their scores are the same floating-point values.

The order ranks tokens by document frequency, rarest first, so a text's prefix is made of its
rarest words and the postings a candidate reads are short. To stay fixed, it is derived only when
the pool reaches a power of two in size (`order_size`), from the texts the pool then holds, and
the index is rebuilt; until the next such size, tokens those texts lacked come before all others,
in code point order, descending (newer tokens first). So the order for a pool of n texts is a pure
function of its first `order_size(n)` texts: a pool rebuilt from the same texts (a resumed run)
searches exactly as the live one did, and truncating below that size restores the earlier order.
Within a token, its later occurrences come first. Which fixed order is used only decides which
texts are examined, never which are missed: every pool text and every query use the same one.

Floating point: `need` is computed for a floor a little below f and rounded down by a margin, so
a rounding error can only lengthen a prefix (look at more texts), never shorten it; a pair whose
rapidfuzz score exceeds f is always found.
"""

from __future__ import annotations

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import Indel

from synth.filters.novelty_index import PrefixIndex

# At most this many pairs of one query are scored in one call (memory: 8 bytes each and the list).
MAX_QUERY_CELLS = 1 << 16


class PrunedSearch:
    """Each query's top k pool texts among those `PrefixIndex.examined` finds, scored exactly.

    Every pool text scoring above the index's floor is examined, so the entries of a query's top k
    that score above the floor are exactly those (and in the same order) of a full row's top k;
    entries at or below the floor are the best of the texts examined (ties to the lower pool index
    throughout). `scored` counts the pairs scored, `pairs` the pairs a full row would have scored.
    One thread: the work per query is one compiled pass over its hits (`novelty_kernels.examine`)
    and one small rapidfuzz call, and two threads were slower than one on a two-core machine.
    """

    def __init__(self, index: PrefixIndex, pool: list[str]) -> None:
        self.index = index
        self.pool = pool
        self.scored = 0
        self.pairs = 0

    def one(self, query: str, k: int, prefix: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One query's (scores, pool indices), best first, at most k of them."""
        index = self.index.examined(query, prefix)
        if not index.size:
            return np.empty(0), index
        self.scored += index.size
        scores = np.empty(index.size)
        for start in range(0, index.size, MAX_QUERY_CELLS):
            part = index[start : start + MAX_QUERY_CELLS].tolist()
            choices = [self.pool[j] for j in part]
            scores[start : start + len(part)] = process.cdist(
                [query], choices, scorer=Indel.normalized_similarity, processor=None, workers=1, dtype=np.float64
            )[0]
        if index.size > k:
            cut = np.partition(scores, index.size - k)[index.size - k]
            keep = scores >= cut  # ties at the cut all stay, for the order below
            scores, index = scores[keep], index[keep]
        order = np.lexsort((index, -scores))[:k]
        return scores[order], index[order]
