"""Compiled loops of `synth.filters.spill.KeyTable`: an open-addressing table of row numbers
(int64, -1 for a free slot) over rows of 128-bit keys kept in their own array. Keys are hashes
already (BLAKE2b digests), so a key's first word's top bits pick its slot; probing is linear."""

from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True, nogil=True)
def _start(word: np.uint64, shift: np.uint64) -> np.int64:
    return np.int64(word >> shift)


@nb.njit(cache=True, nogil=True)
def find(slots: np.ndarray, shift: np.uint64, stored: np.ndarray, keys: np.ndarray, out: np.ndarray) -> None:
    """out[i] = the first row whose stored key equals keys[i], or -1."""
    mask = slots.shape[0] - 1
    for i in range(keys.shape[0]):
        out[i] = -1
        s = _start(keys[i, 0], shift)
        while slots[s] >= 0:
            row = slots[s]
            if stored[row, 0] == keys[i, 0] and stored[row, 1] == keys[i, 1]:
                out[i] = row
                break
            s = (s + 1) & mask


@nb.njit(cache=True, nogil=True)
def insert(slots: np.ndarray, shift: np.uint64, keys: np.ndarray, first_row: int) -> None:
    """Slot row first_row + i for keys[i]. The caller keeps the load at most one half."""
    mask = slots.shape[0] - 1
    for i in range(keys.shape[0]):
        s = _start(keys[i, 0], shift)
        while slots[s] >= 0:
            s = (s + 1) & mask
        slots[s] = first_row + i


@nb.njit(cache=True, nogil=True)
def rehash(slots: np.ndarray, new_slots: np.ndarray, shift: np.uint64, stored: np.ndarray, below: int) -> None:
    """Move every row below `below` from `slots` into the empty `new_slots`."""
    mask = new_slots.shape[0] - 1
    for s in range(slots.shape[0]):
        row = slots[s]
        if 0 <= row < below:
            t = _start(stored[row, 0], shift)
            while new_slots[t] >= 0:
                t = (t + 1) & mask
            new_slots[t] = row
