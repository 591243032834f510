"""Arrays that live in files on disk, mapped into memory.

What grows with a run keeps its arrays here instead of in the process's own memory: the MinHash
index's shingle sets, band table and record ids (`Strings`, and `KeyTable` for the ids' digests),
exact dedup's keys, the novelty pool's references and Self-Instruct's task pool. The pages are the file's: the kernel keeps the ones
in use and writes the rest back to disk when memory is short, so a long run's index costs disk
space, not memory it could die of. The files have no name (they are unlinked as they are made), so
nothing is left behind by a crash, and they go away with the last array that maps them.
"""

from __future__ import annotations

import hashlib
import mmap
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import overload

import numpy as np

from synth.filters import spill_kernels
from synth.filters.lsh_kernels import table_shift


class Spill:
    """Makes arrays backed by unnamed files in `folder` (made if missing), or without one (or when
    it cannot be written) in the system's temporary folder (which may be memory itself, a tmpfs)."""

    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = Path(folder) if folder is not None else None

    def empty(self, shape: int | tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
        """An array of `shape` whose values are zero (a fresh file reads as zeros)."""
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if nbytes == 0:
            return np.zeros(shape, dtype=dtype)
        try:
            mapped = self._mapped(self.folder, nbytes)
        except OSError:  # a folder we cannot write (a read-only dataset): the temporary folder
            if self.folder is None:
                raise
            self.folder = None
            mapped = self._mapped(None, nbytes)
        return np.frombuffer(mapped, dtype=dtype).reshape(shape)

    @staticmethod
    def _mapped(folder: Path | None, nbytes: int) -> mmap.mmap:
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder) as file:
            file.truncate(nbytes)
            return mmap.mmap(file.fileno(), nbytes)  # the mapping outlives the descriptor

    def full(self, shape: int | tuple[int, ...], value: object, dtype: np.dtype | type) -> np.ndarray:
        array = self.empty(shape, dtype)
        array.fill(value)
        return array

    def grown(self, array: np.ndarray, size: int, used: int) -> np.ndarray:
        """A new array of `size` rows holding the first `used` rows of `array`."""
        bigger = self.empty((size, *array.shape[1:]), array.dtype)
        bigger[:used] = array[:used]
        return bigger

    def at_least(self, array: np.ndarray, rows: int, used: int) -> np.ndarray:
        """`array` if it has `rows` rows, else a new one of `rows` or twice as many, whichever is
        more, holding its first `used` rows: a buffer that doubles as it fills."""
        return array if rows <= len(array) else self.grown(array, max(rows, 2 * len(array)), used)


def position(i: int, length: int) -> int:
    """The index `i` of a sequence of `length` items, counted from the end when negative."""
    k = i + length if i < 0 else i
    if not 0 <= k < length:
        raise IndexError(i)
    return k


class StringSequence(Sequence[str]):
    """Strings read by position: a subclass says its length and gives its `k`th string (`at`, for
    0 <= k < length); they read by an index counted from either end, or by a slice."""

    def at(self, k: int) -> str:
        raise NotImplementedError

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> list[str]: ...
    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            return [self.at(k) for k in range(*i.indices(len(self)))]
        return self.at(position(i, len(self)))


class _Mapped:
    """A table that grows in a `Spill`'s mapped files: its rows (`_n`) and its arrays' files."""

    def __init__(self, spill: Spill | None) -> None:
        self._spill = spill or Spill()
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def _arrays(self) -> tuple[np.ndarray, ...]:
        raise NotImplementedError

    @property
    def nbytes(self) -> int:
        """Bytes of its mapped files (capacity, not use)."""
        return sum(array.nbytes for array in self._arrays())


class Strings(_Mapped, StringSequence):
    """A growing column of strings in mapped files: UTF-8 bytes back to back and int64 offsets.
    Reads back by position (`column[i]`, a slice, iteration) and forgets its tail (`truncate`);
    about one byte per character in files, nothing per string in the process."""

    def __init__(self, spill: Spill | None = None) -> None:
        super().__init__(spill)
        self._bytes = self._spill.empty(1 << 12, np.uint8)
        self._offsets = self._spill.empty(1 << 10, np.int64)  # offsets[0] stays 0

    def _arrays(self) -> tuple[np.ndarray, ...]:
        return self._bytes, self._offsets

    def extend(self, texts: Iterable[str]) -> None:
        encoded = [t.encode() for t in texts]
        if not encoded:
            return
        n, used = self._n, int(self._offsets[self._n])
        lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
        size = used + int(lengths.sum())
        self._offsets = self._spill.at_least(self._offsets, n + len(encoded) + 1, n + 1)
        self._bytes = self._spill.at_least(self._bytes, size, used)
        self._bytes[used:size] = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        self._offsets[n + 1 : n + 1 + len(encoded)] = used + np.cumsum(lengths)
        self._n = n + len(encoded)

    def append(self, text: str) -> None:
        self.extend([text])

    def at(self, k: int) -> str:
        return self._bytes[self._offsets[k] : self._offsets[k + 1]].tobytes().decode()

    def __iter__(self) -> Iterator[str]:
        for i in range(self._n):
            yield self[i]

    def truncate(self, n: int) -> None:
        """Keep the first `n` strings."""
        self._n = max(0, min(n, self._n))


def digests(texts: Iterable[str | bytes], size: int = 16) -> np.ndarray:
    """BLAKE2b digests of `texts` as rows of two uint64 words (`KeyTable` keys); a digest shorter
    than 16 bytes is padded with zeros."""
    out = [
        hashlib.blake2b(t.encode() if isinstance(t, str) else t, digest_size=size).digest().ljust(16, b"\0")
        for t in texts
    ]
    return np.frombuffer(b"".join(out), dtype=np.uint64).reshape(-1, 2) if out else np.empty((0, 2), np.uint64)


class KeyTable(_Mapped):
    """A set of 128-bit keys (hash digests, see `digests`), numbered by the order they were added,
    in mapped files: 16 bytes per key and an open-addressing table of 8-byte row numbers at most
    half full, so 32-48 bytes a key on disk and nothing per key in the process. `find` returns
    each key's row (its first, if added twice) or -1; `truncate` forgets the keys added last."""

    def __init__(self, spill: Spill | None = None) -> None:
        super().__init__(spill)
        self._keys = self._spill.empty((1 << 10, 2), np.uint64)
        self._slots = self._spill.full(1 << 11, -1, np.int64)

    def _arrays(self) -> tuple[np.ndarray, ...]:
        return self._keys, self._slots

    def find(self, keys: np.ndarray) -> np.ndarray:
        out = np.empty(len(keys), dtype=np.int64)
        if len(keys):
            spill_kernels.find(
                self._slots, table_shift(self._slots), self._keys, np.ascontiguousarray(keys, np.uint64), out
            )
        return out

    def add(self, keys: np.ndarray) -> None:
        """Append `keys` as rows len(self)...; the caller checks first whether they are known."""
        if not len(keys):
            return
        n, end = self._n, self._n + len(keys)
        self._keys = self._spill.at_least(self._keys, end, n)
        self._keys[n:end] = keys
        if 2 * end > len(self._slots):
            size = len(self._slots)
            while 2 * end > size:
                size *= 2
            self._rehash(size, n)
        spill_kernels.insert(self._slots, table_shift(self._slots), np.ascontiguousarray(keys, np.uint64), n)
        self._n = end

    def truncate(self, n: int) -> None:
        """Keep the first `n` keys."""
        if n < self._n:
            self._rehash(len(self._slots), max(n, 0))
            self._n = max(n, 0)

    def _rehash(self, size: int, below: int) -> None:
        slots = self._spill.full(size, -1, np.int64)
        spill_kernels.rehash(self._slots, slots, table_shift(slots), self._keys, below)
        self._slots = slots
