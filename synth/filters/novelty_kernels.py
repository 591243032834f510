"""Compiled inner loop of the pruned novelty search (numba, machine code cached next to this file):
the overlap tests of `PrefixIndex.examined` over a query's hits, in one pass and without the
temporary arrays a numpy version needs (one per step, a few microseconds each, which at a few
hundred hits cost more than the tests themselves).

A hit is one posting (see `PrefixIndex`): pool text << 32 | its length << 16 | keys after this one
in it. Hits come as one int64 array, the postings arrays of the query's prefix keys back to back in
the query's key order, with each array's length and the keys the query holds after that key. The
kernel runs on one thread and releases the GIL.
"""

from __future__ import annotations

import numba as nb
import numpy as np

# A posting's two length fields are 16 bits each (`PrefixIndex` packs them with this mask).
CAP = 0xFFFF


@nb.njit(cache=True, nogil=True)
def examine(
    hits: np.ndarray,
    sizes: np.ndarray,
    query_lefts: np.ndarray,
    n: int,
    floor: float,
    need_n: int,
    need: np.ndarray,
    mark: np.ndarray,
    slot: np.ndarray,
) -> np.ndarray:
    """The pool texts, ascending, that pass both tests of `PrefixIndex.examined` (`floor` already
    lowered by the margin, `need_n` the query's count bound, `need` the table of `need` by length).

    First test: a text passes if one of its hits h has 2·(1 + min(query keys after h, text keys
    after h)) / (|text| + n) > floor. A text's hits come in query order and that bound only shrinks
    along them, so a text passes at its first hit or never. Second: with c its hits and the last
    one, 2·(c + min(query keys after it, text keys after it, max(need_n, need(|text|)) - 1)) /
    (|text| + n) > floor.

    Scratch, one entry per pool text: `mark` one bit (64 to a word; all 0 on entry and on return),
    so that a million texts take 128 KiB and stay in the processor's cache while hits land on
    random texts; `slot` (int32) where a text that passed keeps its count, read only for those."""
    total = hits.size
    docs = np.empty(total, dtype=np.int64)
    count = np.empty(total, dtype=np.int64)
    last = np.empty(total, dtype=np.int64)
    last_left = np.empty(total, dtype=np.int64)
    passed = 0
    at = 0
    for a in range(sizes.size):
        q = query_lefts[a]
        for h in range(at, at + sizes[a]):
            v = hits[h]
            doc = v >> 32
            bit = np.uint64(1) << np.uint64(doc & 63)
            if mark[doc >> 6] & bit:
                s = slot[doc]
                count[s] += 1
            elif 2.0 * (1 + min(q, v & CAP)) / (((v >> 16) & CAP) + n) > floor:
                mark[doc >> 6] |= bit
                s = passed
                slot[doc] = s
                docs[s] = doc
                count[s] = 1
                passed += 1
            else:
                continue
            last[s] = v
            last_left[s] = q
        at += sizes[a]
    kept = np.empty(passed, dtype=np.int64)
    found = 0
    for s in range(passed):
        mark[docs[s] >> 6] = np.uint64(0)
        v = last[s]
        length = (v >> 16) & CAP
        after = min(last_left[s], v & CAP, max(need_n, need[length]) - 1)
        if 2.0 * (count[s] + after) / (length + n) > floor:
            kept[found] = docs[s]
            found += 1
    return np.sort(kept[:found])
