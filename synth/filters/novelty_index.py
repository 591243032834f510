"""The prefix index behind the pruned novelty search: which pool texts a query must be scored
against, found from a few keys of each text (see `synth.filters.novelty_search` for the method,
its bounds and why the results are exact above the floor)."""

from __future__ import annotations

import functools
import itertools
import math
import time
from array import array
from collections import Counter
from collections.abc import Sequence

import numpy as np

from synth.filters.novelty_kernels import CAP, examine

# Below the floor by this much: rapidfuzz's score and our own bounds round differently.
MARGIN = 1e-9
# Texts of this many tokens or more are not in the postings: every query examines them.
LONG = CAP
# A key's postings are split by how many keys follow it in the pool text: 0-3, 4-7, ... and the rest.
BUCKETS = 8
# Rebuilds index this many texts at a time (its numpy arrays: about 100 bytes per token).
BUILD_CHUNK = 1 << 16


def length_ratio_bound(threshold: float) -> float:
    """F > threshold needs shorter/longer length > this: 2r/(1+r) > t  <=>  r > t/(2-t)."""
    return threshold / (2.0 - threshold)


def need(length: int, floor: float) -> int:
    """The fewest keys a text of `length` tokens must share with another for their F1 to exceed
    `floor` (computed for a slightly lower floor, so never more than that)."""
    f = floor - MARGIN
    if f <= 0:
        return 1
    return max(1, math.ceil(f * length / (2.0 - f) - MARGIN))


def prefix_length(length: int, floor: float) -> int:
    return max(0, length - need(length, floor) + 1)


def sorted_keys(code: str) -> list[int]:
    """A text's keys in code point order, descending, then occurrence descending (`PrefixIndex`
    first translates a text's code points into the order's ranks). A key is code point << 32 |
    occurrence."""
    chars = sorted(code, reverse=True)
    keys = [ord(c) << 32 for c in chars]
    # Repeated tokens are adjacent: number a run of r copies r-1 down to 0.
    run = 0
    for i in range(len(chars) - 1, -1, -1):
        if i + 1 < len(chars) and chars[i] == chars[i + 1]:
            run += 1
            keys[i] |= run
        else:
            run = 0
    return keys


def order_size(n: int) -> int:
    """How many of a pool's first texts fix its key order: the largest power of two <= n (0: none)."""
    return 1 << (n.bit_length() - 1) if n > 0 else 0


def frequency_order(codes: Sequence[str]) -> dict[int, int]:
    """A `str.translate` table, one-to-one on code points, whose descending order is the key order
    the texts `codes` give: their tokens by document frequency, rarest first (ties: the higher code
    point first), then every other code point before them all. The V tokens of `codes` go to
    0..V-1 (the commonest to 0); the code points below V that are not among them go, in order, to
    the tokens' code points at or above V; every other code point stays itself (and so above V)."""
    df = Counter(itertools.chain.from_iterable(map(set, codes)))
    ranked = sorted(df.items(), key=lambda item: (-item[1], item[0]))
    table = {ord(token): rank for rank, (token, _) in enumerate(ranked)}
    size = len(table)
    low = sorted(set(range(size)).difference(table))
    table.update(zip(low, sorted(point for point in table if point >= size), strict=True))
    return table


@functools.lru_cache(maxsize=8)
def _need_table(floor: float) -> np.ndarray:
    """need(m, floor) for every length a posting can hold, computed by `need` itself."""
    return np.array([need(m, floor) for m in range(CAP + 1)], dtype=np.int64)


class PrefixIndex:
    """Postings of the pool texts' prefix keys (for floor `floor`): for each key, one int64 per pool
    text whose prefix holds it, in pool order: the text's index << 32 | its length << 16 | how many
    of its keys follow this one ("left"). Each key's postings are split into `BUCKETS` arrays by
    left // 4 (the last one takes the rest), so a query can skip the pool texts in which the key
    comes too late to matter. Texts of `LONG` tokens or more are not in the postings: every query
    examines them. Memory: 8 bytes per prefix key of the pool (about half its tokens at 0.7), a
    few small arrays per distinct key, the order's table (two ints per token) and a reference per
    text (the index keeps the texts, to rebuild itself when the order changes).

    The key order is `frequency_order` of the first `order_size(len(self))` texts: re-derived, and
    every text re-indexed, when the pool reaches a power of two in size (or is truncated below the
    size that fixed it), so it depends on those texts only, not on how the pool got there."""

    def __init__(self, floor: float) -> None:
        self.floor = floor
        self._postings: dict[int, list[array[int] | None]] = {}
        self._codes: list[str] = []
        self._long: list[int] = []
        self._table: dict[int, int] = {}
        self.order_from = 0
        # How many times the order was derived and the postings rebuilt, and the seconds it took.
        self.rebuilds = 0
        self.rebuild_seconds = 0.0
        # While `hold` is set (texts added may be truncated again, as in a check without adding),
        # a rebuild keeps the earlier postings, so truncating below the new order's size restores
        # them instead of rebuilding: (texts they index, order_from, table, postings, long texts).
        self.hold = False
        # While holding: the prefix keys of each text `add` indexed, from text `_held_from` on, so
        # that taking them out again does not compute them again.
        self._held: list[list[int]] = []
        self._held_from = 0
        self._saved: tuple[int, int, dict[int, int], dict[int, list[array[int] | None]], list[int]] | None = None
        self._need = _need_table(floor)
        # Scratch for `examine`: one bit per pool text (all 0 between queries), and a slot number.
        self._mark = np.zeros(0, dtype=np.uint64)
        self._slot = np.zeros(0, dtype=np.int32)

    def __len__(self) -> int:
        return len(self._codes)

    def prefix(self, code: str) -> list[int]:
        """The text's prefix keys, in the current order."""
        return sorted_keys(code.translate(self._table))[: prefix_length(len(code), self.floor)]

    def add(self, code: str, prefix: list[int] | None = None) -> None:
        """Index the next pool text (`prefix`: its `prefix(code)`, if already computed)."""
        self._codes.append(code)
        if order_size(len(self._codes)) > self.order_from:
            if self.hold:
                self._saved = (len(self._codes) - 1, self.order_from, self._table, self._postings, self._long)
            self._held = []
            self._rebuild()
        else:
            if prefix is None:
                prefix = self.prefix(code)
            if self.hold:
                if not self._held:
                    self._held_from = len(self._codes) - 1
                self._held.append(prefix)
            self._index(len(self._codes) - 1, code, prefix)

    def release(self) -> None:
        """Stop holding: forget the postings kept from before the last rebuild."""
        self.hold = False
        self._saved = None
        self._held = []

    def extend(self, codes: Sequence[str]) -> None:
        """Index the next pool texts; as `add` one at a time, with one rebuild at most."""
        start = len(self._codes)
        self._codes.extend(codes)
        if order_size(len(self._codes)) > self.order_from:
            self._rebuild()
        else:
            for begin in range(start, len(self._codes), BUILD_CHUNK):
                self._index_many(begin, min(len(self._codes), begin + BUILD_CHUNK))

    def _rebuild(self) -> None:
        """Derive the order from the first `order_from` texts and index every text by it: the
        postings `_index` would build one text at a time, computed in numpy for all at once."""
        start = time.perf_counter()
        try:
            self._build()
        finally:
            self.rebuild_seconds += time.perf_counter() - start

    def _build(self) -> None:
        codes = self._codes
        self.order_from = order_size(len(codes))
        self._table = frequency_order(codes[: self.order_from])
        self._postings = {}
        self._long = []
        self.rebuilds += 1
        for start in range(0, len(codes), BUILD_CHUNK):
            self._index_many(start, min(len(codes), start + BUILD_CHUNK))

    def _index_many(self, start: int, stop: int) -> None:
        """Index the texts `start` to `stop` (every earlier one indexed): the postings `_index`
        would add one text at a time, computed in numpy for all at once."""
        codes = self._codes[start:stop]
        lengths = np.fromiter(map(len, codes), dtype=np.int64, count=len(codes))
        long = lengths >= min(LONG, CAP)
        self._long.extend((np.flatnonzero(long) + start).tolist())
        lengths[long] = 0
        joined = "".join(c for c, skip in zip(codes, long.tolist(), strict=True) if not skip).translate(self._table)
        points = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.int64)
        if not points.size:
            return
        doc = np.repeat(np.arange(start, stop, dtype=np.int64), lengths)
        starts = np.cumsum(lengths) - lengths
        # Each text's keys as `sorted_keys` gives them: code point descending, repeats numbered
        # from the run's length - 1 down to 0.
        ranked = doc << 21 | (0x1FFFFF - points)  # code points take 21 bits
        ranked.sort()
        points = 0x1FFFFF - (ranked & 0x1FFFFF)
        del ranked
        total = points.size
        new_run = np.ones(total, dtype=bool)
        new_run[1:] = (points[1:] != points[:-1]) | (doc[1:] != doc[:-1])
        run_end = np.append(np.flatnonzero(new_run)[1:], total) - 1
        occurrence = run_end[np.cumsum(new_run) - 1] - np.arange(total)
        keys = points << 32 | occurrence
        del points, occurrence, run_end, new_run
        position = np.arange(total) - starts[doc - start]
        m = lengths[doc - start]
        need_m = self._need[np.minimum(m, CAP)]
        take = position < m - need_m + 1
        keys, doc, m, left = keys[take], doc[take], m[take], (m - 1 - position)[take]
        del position, need_m, take
        bucket = np.minimum(left >> 2, BUCKETS - 1)
        values = doc << 32 | m << 16 | left
        # Group by (key, bucket), pool order kept within a group (a stable sort).
        group = keys << 3 | bucket
        del keys, doc, m, left, bucket
        order = np.argsort(group, kind="stable")
        group, values = group[order], values[order]
        bounds = np.flatnonzero(group[1:] != group[:-1]) + 1
        first = np.concatenate(([0], bounds))
        last = np.append(bounds, group.size)
        raw = values.tobytes()
        postings = self._postings
        for g, s, e in zip(group[first].tolist(), first.tolist(), last.tolist(), strict=True):
            key = g >> 3
            buckets = postings.get(key)
            if buckets is None:
                buckets = postings[key] = [None] * BUCKETS
            posting = buckets[g & (1 << 3) - 1]
            if posting is None:
                posting = buckets[g & (1 << 3) - 1] = array("q")
            posting.frombytes(raw[8 * s : 8 * e])

    def _index(self, doc: int, code: str, prefix: list[int]) -> None:
        m = len(code)
        if m >= min(LONG, CAP):
            self._long.append(doc)
            return
        head = doc << 32 | m << 16
        postings = self._postings
        for position, key in enumerate(prefix):
            buckets = postings.get(key)
            if buckets is None:
                buckets = postings[key] = [None] * BUCKETS
            left = m - 1 - position
            bucket = buckets[min(left >> 2, BUCKETS - 1)]
            if bucket is None:
                bucket = buckets[min(left >> 2, BUCKETS - 1)] = array("q")
            bucket.append(head | left)

    def truncate(self, size: int) -> None:
        """Forget the indexed texts `size` and after; below the size that fixed the order, the
        order of the remaining texts is derived again and they are re-indexed."""
        if size >= len(self._codes):
            return
        if order_size(size) < self.order_from:
            saved, self._saved = self._saved, None
            if saved is not None and saved[1] == order_size(size) and size <= saved[0]:
                # The postings from before the rebuild index the first saved[0] texts.
                count, self.order_from, self._table, self._postings, self._long = saved
                self._forget(size, count)
                del self._codes[size:]
            else:
                del self._codes[size:]
                self._rebuild()
            return
        self._forget(size, len(self._codes))
        del self._codes[size:]

    def _forget(self, size: int, count: int) -> None:
        """Take the texts `size` to `count` out of the postings (the last ones indexed)."""
        held = self._held
        for doc in range(count - 1, size - 1, -1):
            code = self._codes[doc]
            keys = held.pop() if held and doc == self._held_from + len(held) - 1 else None
            if len(code) >= min(LONG, CAP):
                self._long.pop()
                continue
            m = len(code)
            for position, key in enumerate(self.prefix(code) if keys is None else keys):
                buckets = self._postings[key]
                b = min((m - 1 - position) >> 2, BUCKETS - 1)
                bucket = buckets[b]
                assert bucket is not None
                bucket.pop()
                if not bucket:
                    buckets[b] = None
                    if not any(buckets):
                        del self._postings[key]

    def examined(self, code: str, prefix: list[int] | None = None) -> np.ndarray:
        """The pool texts a query must score, ascending: those sharing a prefix key with it (a hit)
        whose overlap bound leaves room for F > floor, and the texts of `LONG` tokens or more.

        Keys are met in the index's order. For a pool text b with c hits, the last at position i of
        the query q and j of b: every key both share up to that hit is a hit (it sits in both
        prefixes), and the keys shared after it number at most min(|q|-1-i, |b|-1-j) and at most
        max(need(|q|), need(|b|)) - 1 (each lies past q's prefix or past b's; in the one order
        one lying past q's prefix only cannot precede one lying past b's only, nor follow it, since
        both orders agree, so all lie past the same text's prefix). So the overlap is at most
        c + min(|q|-1-i, |b|-1-j, max need - 1) and F <= 2·that/(|q|+|b|). A first, cheaper test
        drops the texts whose first hit already fails 1 + min(|q|-1-i, |b|-1-j): later hits only
        make that bound smaller. Both tests run in one compiled pass over the hits
        (`novelty_kernels.examine`).

        Hits whose pool text has fewer than L keys left after the key are not read, for the
        largest L (a multiple of 4) with 2L/(L+|q|) <= floor: such a hit gives F <= 2(1+left)/(1+
        left+|q|) <= floor whatever comes before it. A text whose hits are all skipped cannot pass;
        for one with skipped hits after the last read one, every key shared after that one lies in
        its last L keys, so the count bound above takes max(max need - 1, L) in place of max need - 1.
        """
        n = len(code)
        if not n:
            return np.empty(0, dtype=np.int64)
        keys = self.prefix(code) if prefix is None else prefix
        f = self.floor - MARGIN
        first = min(max(0, math.floor(f * n / (2.0 - f) - MARGIN)) >> 2, BUCKETS - 1) if f > 0 else 0
        hits = [
            (n - 1 - i, b)
            for i, k in enumerate(keys)
            if (buckets := self._postings.get(k))
            for b in buckets[first:]
            if b
        ]
        found = self._examined(n, hits, 4 * first) if hits else np.empty(0, dtype=np.int64)
        if self._long:
            found = np.union1d(found, np.array(self._long, dtype=np.int64))
        return found

    def _examined(self, n: int, hits: list[tuple[int, array[int]]], skipped: int) -> np.ndarray:
        if self._slot.size < len(self._codes):
            self._slot = np.zeros(max(1024, 2 * len(self._codes)), dtype=np.int32)
            self._mark = np.zeros(self._slot.size // 64 + 1, dtype=np.uint64)
        return examine(
            np.frombuffer(b"".join([b for _, b in hits]), dtype=np.int64),
            np.array([len(b) for _, b in hits], dtype=np.int64),
            np.array([q for q, _ in hits], dtype=np.int64),
            n,
            self.floor - MARGIN,
            max(need(n, self.floor), skipped + 1),
            self._need,
            self._mark,
            self._slot,
        )
