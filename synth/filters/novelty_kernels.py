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

_CAP = 0xFFFF


@nb.njit(cache=True, nogil=True)
def examine(
    hits: np.ndarray,
    sizes: np.ndarray,
    query_lefts: np.ndarray,
    n: int,
    floor: float,
    need_n: int,
    need: np.ndarray,
    state: np.ndarray,
) -> np.ndarray:
    """The pool texts, ascending, that pass both tests of `PrefixIndex.examined` (`floor` already
    lowered by the margin, `need_n` the query's count bound, `need` the table of `need` by length).

    First test: a text passes if one of its hits h (the first suffices: the bound only shrinks)
    has 2·(1 + min(query keys after h, text keys after h)) / (|text| + n) > floor. Second: with c
    its hits and the last one in query order, 2·(c + min(query keys after it, text keys after it,
    max(need_n, need(|text|)) - 1)) / (|text| + n) > floor.

    `state` holds one int64 per pool text, all 0 on entry and on return: a text's hit count << 33
    | whether it passed the first test << 32 | its last hit's position in `hits`."""
    touched = np.empty(hits.size, dtype=np.int64)
    query_left = np.empty(hits.size, dtype=np.int64)
    seen = 0
    at = 0
    for a in range(sizes.size):
        q = query_lefts[a]
        for h in range(at, at + sizes[a]):
            v = hits[h]
            doc = v >> 32
            query_left[h] = q
            s = state[doc]
            if s == 0:
                touched[seen] = doc
                seen += 1
            if not (s >> 32) & 1:
                length = (v >> 16) & _CAP
                if 2.0 * (1 + min(q, v & _CAP)) / (length + n) > floor:
                    s |= 1 << 32
            state[doc] = ((s >> 33) + 1) << 33 | (s & (1 << 32)) | h
        at += sizes[a]
    kept = np.empty(seen, dtype=np.int64)
    count = 0
    for i in range(seen):
        doc = touched[i]
        s = state[doc]
        state[doc] = 0
        if not (s >> 32) & 1:
            continue
        v = hits[s & 0xFFFFFFFF]
        length = (v >> 16) & _CAP
        after = min(query_left[s & 0xFFFFFFFF], v & _CAP, max(need_n, need[length]) - 1)
        if 2.0 * ((s >> 33) + after) / (length + n) > floor:
            kept[count] = doc
            count += 1
    return np.sort(kept[:count])
