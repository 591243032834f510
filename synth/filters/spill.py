"""Arrays that live in files on disk, mapped into memory.

An index that grows with a run (the MinHash index's shingle sets and band table) keeps its arrays
here instead of in the process's own memory. The pages are the file's: the kernel keeps the ones
in use and writes the rest back to disk when memory is short, so a long run's index costs disk
space, not memory it could die of. The files have no name (they are unlinked as they are made), so
nothing is left behind by a crash, and they go away with the last array that maps them.
"""

from __future__ import annotations

import mmap
import tempfile
from pathlib import Path

import numpy as np


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
