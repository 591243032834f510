"""Compiled inner loops of near-duplicate removal (numba, machine code cached next to this file).

Each kernel runs on one thread and releases the GIL: flows call them from several threads at once,
and numba's parallel launcher is not safe to enter that way. Array layouts:
- shingle sets: one flat uint32 array of sorted, distinct shingle hashes per text, back to back,
  with int64 offsets (len(texts) + 1) into it;
- a band table: open addressing over one uint64 per slot, the low 32 bits of a band key above
  the row's number (all ones for a free slot), a power-of-two size, probed linearly from the top
  bits of a multiplicative hash of those 32 bits. One slot per (indexed text, band); equal keys
  share a probe run, so a lookup collects every row whose band matches. Eight bytes a slot and one
  memory access a probe, kept at most half full.
"""

from __future__ import annotations

import numba as nb
import numpy as np

NO_MATCH = np.iinfo(np.int64).min
_FULL32 = np.uint32(0xFFFFFFFF)
_SHIFT32 = np.uint64(32)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
EMPTY = np.uint64(0xFFFFFFFFFFFFFFFF)  # a free slot of a band table


_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_MULT = np.uint64(1_000_003)
_MAX32 = np.uint64(0xFFFFFFFF)


@nb.njit(cache=True, nogil=True)
def _token_hash(data: np.ndarray, start: int, end: int) -> np.uint64:
    """FNV-1a over data[start:end], finished with splitmix64's mixer."""
    h = _FNV_OFFSET
    for p in range(start, end):
        h = (h ^ np.uint64(data[p])) * _FNV_PRIME
    h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


@nb.njit(cache=True, nogil=True)
def token_hashes(data: np.ndarray, token_offsets: np.ndarray) -> np.ndarray:
    """The hash of each token data[token_offsets[t]:token_offsets[t + 1]] (UTF-8 bytes)."""
    hashes = np.empty(token_offsets.shape[0] - 1, dtype=np.uint64)
    for t in range(hashes.shape[0]):
        hashes[t] = _token_hash(data, token_offsets[t], token_offsets[t + 1])
    return hashes


@nb.njit(cache=True, nogil=True)
def ngrams(codes: np.ndarray, counts: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(32-bit shingle hashes back to back, shingles per text) for texts whose units (token hashes
    or code points) are `codes`, counts[i] of them for text i, in order. Every window of n units
    is one shingle, hashed polynomially (mod 2**64); a text of n units or fewer is one shingle."""
    per_text = np.empty(counts.shape[0], dtype=np.int64)
    total = 0
    for i in range(counts.shape[0]):
        per_text[i] = max(counts[i] - n + 1, 1)
        total += per_text[i]
    out = np.empty(total, dtype=np.uint64)
    pos = 0
    first = 0
    for i in range(counts.shape[0]):
        width = min(n, counts[i])
        for w in range(per_text[i]):
            h = np.uint64(0)
            for t in range(first + w, first + w + width):
                h = h * _MULT + np.uint64(codes[t])
            out[pos] = h & _MAX32
            pos += 1
        first += counts[i]
    return out, per_text


@nb.njit(cache=True, nogil=True)
def minhash(flat: np.ndarray, offsets: np.ndarray, a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """out[i, k] = min over text i's shingle hashes h of the top 32 bits of a[k]*h + b[k] (mod 2**64)."""
    perms = a.shape[0]
    for i in range(offsets.shape[0] - 1):
        row = out[i]
        for k in range(perms):
            row[k] = _FULL32
        for j in range(offsets[i], offsets[i + 1]):
            h = flat[j]
            for k in range(perms):
                v = np.uint32((a[k] * h + b[k]) >> _SHIFT32)
                if v < row[k]:
                    row[k] = v


@nb.njit(cache=True, nogil=True)
def band_keys(sigs: np.ndarray, rows: int, out: np.ndarray) -> None:
    """out[i, k] = sum over r < rows of sigs[i, k*rows + r] * MULT**r (mod 2**64), xor k * GOLDEN."""
    for i in range(sigs.shape[0]):
        for k in range(out.shape[1]):
            h = np.uint64(0)
            for r in range(rows - 1, -1, -1):
                h = h * _MULT + np.uint64(sigs[i, k * rows + r])
            out[i, k] = h ^ (np.uint64(k) * _GOLDEN)


@nb.njit(cache=True, nogil=True)
def distinct_sorted(flat: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each text's shingle hashes (uint32) sorted and without repeats, as a new flat array and offsets."""
    n = offsets.shape[0] - 1
    out = np.empty(flat.shape[0], dtype=np.uint32)
    out_offsets = np.empty(n + 1, dtype=np.int64)
    out_offsets[0] = 0
    pos = 0
    for i in range(n):
        part = np.sort(flat[offsets[i] : offsets[i + 1]].astype(np.uint32))
        for j in range(part.shape[0]):
            if j == 0 or part[j] != part[j - 1]:
                out[pos] = part[j]
                pos += 1
        out_offsets[i + 1] = pos
    return out[:pos].copy(), out_offsets


@nb.njit(cache=True, nogil=True)
def sorted_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard similarity of two sorted arrays of distinct values."""
    i = j = common = 0
    while i < a.shape[0] and j < b.shape[0]:
        if a[i] == b[j]:
            common += 1
            i += 1
            j += 1
        elif a[i] < b[j]:
            i += 1
        else:
            j += 1
    union = a.shape[0] + b.shape[0] - common
    return common / union if union else 1.0


@nb.njit(cache=True, nogil=True)
def _start(fragment: np.uint64, shift: np.uint64) -> np.int64:
    return np.int64((fragment * _GOLDEN) >> shift)


@nb.njit(cache=True, nogil=True)
def _put(table: np.ndarray, shift: np.uint64, key: np.uint64, row: int) -> None:
    fragment = key & _MAX32
    s = _start(fragment, shift)
    mask = table.shape[0] - 1
    while table[s] != EMPTY:
        s = (s + 1) & mask
    table[s] = (fragment << _SHIFT32) | np.uint64(row)


@nb.njit(cache=True, nogil=True)
def table_insert(table: np.ndarray, shift: np.uint64, band_keys: np.ndarray, first_row: int) -> None:
    """Insert band_keys[i, :] for row first_row + i. The caller keeps the load at most one half."""
    for i in range(band_keys.shape[0]):
        for k in range(band_keys.shape[1]):
            _put(table, shift, band_keys[i, k], first_row + i)


@nb.njit(cache=True, nogil=True)
def table_rehash(table: np.ndarray, new_table: np.ndarray, shift: np.uint64, below: int = -1) -> None:
    """Move every entry of `table` into the (larger, empty) `new_table`; with `below` >= 0, only
    the entries of rows below it (forgetting rows added since)."""
    mask = new_table.shape[0] - 1
    for s in range(table.shape[0]):
        entry = table[s]
        if entry != EMPTY and (below < 0 or np.int64(entry & _MAX32) < below):
            t = _start(entry >> _SHIFT32, shift)
            while new_table[t] != EMPTY:
                t = (t + 1) & mask
            new_table[t] = entry


def table_shift(table: np.ndarray) -> np.uint64:
    """The hash shift for a table of a power-of-two size: its slot is the top log2(size) bits."""
    return np.uint64(64 - (table.shape[0].bit_length() - 1))


@nb.njit(cache=True, nogil=True)
def _probe(
    table: np.ndarray,
    shift: np.uint64,
    keys: np.ndarray,
    seen: np.ndarray,
    i: int,
    exact: bool,
    sig: np.ndarray,
    shingle_set: np.ndarray,
    other_sigs: np.ndarray,
    other_shingles: np.ndarray,
    other_offsets: np.ndarray,
    threshold: float,
    best: float,
    best_row: np.int64,
) -> tuple[float, np.int64]:
    """Check text i against every row of `table` that shares one of its band keys `keys` and that
    text i has not checked yet (`seen[row] == i + 1` once checked); returns the most similar row at
    or above the threshold so far, with its similarity (`best`, `best_row` when none beats them)."""
    mask = table.shape[0] - 1
    for key in keys:
        fragment = key & _MAX32
        s = _start(fragment, shift)
        while table[s] != EMPTY:
            entry = table[s]
            row = np.int64(entry & _MAX32)
            if (entry >> _SHIFT32) == fragment and seen[row] != i + 1:
                seen[row] = i + 1
                # Exact Jaccard of the shingle sets, or the share of equal signature values
                # (`other_sigs` is only read for the latter).
                if exact:
                    sim = sorted_jaccard(shingle_set, other_shingles[other_offsets[row] : other_offsets[row + 1]])
                else:
                    same = 0
                    for k in range(sig.shape[0]):
                        if sig[k] == other_sigs[row, k]:
                            same += 1
                    sim = same / sig.shape[0]
                if sim >= threshold and sim > best:
                    best, best_row = sim, row
            s = (s + 1) & mask
    return best, best_row


@nb.njit(cache=True, nogil=True)
def find_duplicates(
    band_keys: np.ndarray,
    sigs: np.ndarray,
    shingles: np.ndarray,
    shingle_offsets: np.ndarray,
    table: np.ndarray,
    shift: np.uint64,
    index_sigs: np.ndarray,
    index_shingles: np.ndarray,
    index_offsets: np.ndarray,
    exact: bool,
    threshold: float,
    match: np.ndarray,
    score: np.ndarray,
) -> None:
    """For each new text i, in order: match[i] = the indexed row it is most similar to (at least
    `threshold`), else -1 - j for the most similar earlier text j of the batch that was not itself
    a duplicate, else it stays NO_MATCH (int64 min); score[i] = that similarity. Texts whose
    match[i] is not NO_MATCH on entry are taken as duplicates already and left alone.

    Candidates are rows sharing a band key (compared on 32 of its bits: a rare false candidate
    only costs a check); each is confirmed on the Jaccard similarity of the shingle sets (`exact`)
    or on the share of equal signature values."""
    n, bands = band_keys.shape
    stamp = np.zeros(index_offsets.shape[0] - 1, dtype=np.int32)  # last text i (+1) that checked a row
    # Earlier kept texts of this batch, in a table of their own.
    local_size = 16
    while local_size < 2 * n * bands:
        local_size *= 2
    local = np.full(local_size, EMPTY, dtype=np.uint64)
    local_shift = np.uint64(64 - int(np.log2(local_size)))
    local_stamp = np.zeros(n, dtype=np.int32)
    for i in range(n):
        if match[i] != NO_MATCH:  # decided by the caller (the Redis index answers for its records)
            continue
        sh_i = shingles[shingle_offsets[i] : shingle_offsets[i + 1]]
        keys = band_keys[i]
        best, row = _probe(
            table,
            shift,
            keys,
            stamp,
            i,
            exact,
            sigs[i],
            sh_i,
            index_sigs,
            index_shingles,
            index_offsets,
            threshold,
            -1.0,
            np.int64(-1),
        )
        if row >= 0:
            match[i] = row
        else:
            best, row = _probe(
                local,
                local_shift,
                keys,
                local_stamp,
                i,
                exact,
                sigs[i],
                sh_i,
                sigs,
                shingles,
                shingle_offsets,
                threshold,
                best,
                row,
            )
            if row >= 0:
                match[i] = -1 - row
        if match[i] == NO_MATCH:
            for k in range(bands):
                _put(local, local_shift, band_keys[i, k], i)
        else:
            score[i] = best
