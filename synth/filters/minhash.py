"""MinHash signatures for whole batches at once, and LSH banding.

Scheme "synth-minhash-v2" (recorded with every persisted index, with its parameters):
- text: instruction, input and output joined by newlines; lowercased when configured;
- word shingles: runs of \\w+ tokens (polars' regex engine), except that each letter of a script
  written without spaces (Han, kana, Hangul, Thai...) is a token of its own
  (`tokens.WORD_PATTERN`), n at a time (a text shorter than n is one shingle). Text without such
  letters tokenizes as plain \\w+, so its signatures are those the scheme always gave (an index
  holding such letters from before this split should be rebuilt). A token's hash is FNV-1a over
  its UTF-8 bytes, finished with the splitmix64 mixer, and an n-gram's hash combines its tokens'
  hashes polynomially (mod 2**64);
  char shingles: n consecutive characters (whitespace collapsed), hashed polynomially over their
  code points;
- shingle hashes are cut to 32 bits; permutation k maps h to the top 32 bits of
  (a_k*h + b_k) mod 2**64 (multiply-shift hashing; a_k odd), with (a_k, b_k) drawn from numpy's
  RandomState(seed). datasketch uses a Mersenne-prime modulus instead; the division it costs was
  most of the time of a batch here, and the multiply-shift family is universal as well;
- a signature is the per-permutation minimum over a text's shingles.
Tokenizing runs in polars over the whole batch; hashing, n-grams and signatures in the compiled
kernels of `lsh_kernels`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import polars as pl
import pyarrow as pa

from synth.filters import lsh_kernels
from synth.filters.tokens import WORD_PATTERN
from synth.schemas.curation import MinHashConfig

SCHEME = "synth-minhash-v2"
_SPACE = re.compile(r"\s+")


def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    gen = np.random.RandomState(seed)
    a = gen.randint(0, np.iinfo(np.uint64).max, size=num_perm, dtype=np.uint64) | np.uint64(1)
    b = gen.randint(0, np.iinfo(np.uint64).max, size=num_perm, dtype=np.uint64)
    return a, b


def _char_shingles(texts: Sequence[str], config: MinHashConfig) -> tuple[np.ndarray, np.ndarray]:
    """(flat shingle hashes, shingles per text) for a batch of character n-grams over each text's
    code points, whitespace collapsed."""
    parts = []
    for text in texts:
        collapsed = _SPACE.sub(" ", text.lower() if config.lowercase else text).strip()
        parts.append(np.frombuffer(collapsed.encode("utf-32-le"), dtype=np.uint32))
    counts = np.array([len(p) for p in parts], dtype=np.int64)
    codes = np.concatenate(parts) if parts else np.empty(0, dtype=np.uint32)
    return lsh_kernels.ngrams(codes.astype(np.uint64), counts, config.ngram)


def _word_shingles(texts: Sequence[str], config: MinHashConfig) -> tuple[np.ndarray, np.ndarray]:
    """(flat shingle hashes, shingles per text) for a batch: tokenized by polars, hashed compiled."""
    series = pl.Series(texts, dtype=pl.String)
    if config.lowercase:
        series = series.str.to_lowercase()
    tokens = series.str.extract_all(WORD_PATTERN)
    counts = tokens.list.len().fill_null(0).to_numpy().astype(np.int64)
    lists = tokens.to_arrow()
    if isinstance(lists, pa.ChunkedArray):
        lists = lists.combine_chunks()
    flat = lists.flatten().cast(pa.large_string())
    _, offsets_buffer, data_buffer = flat.buffers()
    token_offsets = np.frombuffer(offsets_buffer, dtype=np.int64)[flat.offset : flat.offset + len(flat) + 1]
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else np.empty(0, dtype=np.uint8)
    return lsh_kernels.ngrams(lsh_kernels.token_hashes(data, np.ascontiguousarray(token_offsets)), counts, config.ngram)


@dataclass
class SignedBatch:
    """A batch's MinHash signatures (one row of `num_perm` uint32 per text) and its shingle sets
    (sorted distinct uint32 hashes, back to back; text i's are shingles[offsets[i]:offsets[i+1]])."""

    sigs: np.ndarray
    shingles: np.ndarray
    offsets: np.ndarray
    _keys: dict[tuple[int, int], np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    def keys(self, bands: int, rows: int) -> np.ndarray:
        """The LSH band keys of every text (computed once per banding)."""
        if (bands, rows) not in self._keys:
            self._keys[bands, rows] = band_keys(self.sigs, bands, rows)
        return self._keys[bands, rows]

    def __len__(self) -> int:
        return len(self.sigs)

    def shingle_set(self, i: int) -> np.ndarray:
        return self.shingles[self.offsets[i] : self.offsets[i + 1]]

    def take(self, rows: Sequence[int] | np.ndarray) -> SignedBatch:
        """The batch of the given texts, in that order."""
        rows = np.asarray(rows, dtype=np.int64)
        starts = self.offsets[rows]
        lengths = self.offsets[rows + 1] - starts
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        positions = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
        keys = {banding: k[rows] for banding, k in self._keys.items()}
        return SignedBatch(self.sigs[rows], self.shingles[positions], offsets, keys)


def sign(texts: Sequence[str], config: MinHashConfig, chunk: int = 8192) -> SignedBatch:
    """Signatures and shingle sets of a batch of texts."""
    a, b = _permutations(config.num_perm, config.seed)
    sigs = np.empty((len(texts), config.num_perm), dtype=np.uint32)
    shingle_parts, length_parts = [], []
    for start in range(0, len(texts), chunk):
        part = texts[start : start + chunk]
        flat, lengths = (_word_shingles if config.shingle == "word" else _char_shingles)(part, config)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        lsh_kernels.minhash(np.ascontiguousarray(flat, dtype=np.uint64), offsets, a, b, sigs[start : start + len(part)])
        distinct, distinct_offsets = lsh_kernels.distinct_sorted(flat, offsets)
        shingle_parts.append(distinct)
        length_parts.append(np.diff(distinct_offsets))
    lengths = np.concatenate(length_parts) if length_parts else np.empty(0, dtype=np.int64)
    shingles = np.concatenate(shingle_parts) if shingle_parts else np.empty(0, dtype=np.uint32)
    return SignedBatch(sigs, shingles, np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))


def from_shingles(shingles: np.ndarray, offsets: np.ndarray, config: MinHashConfig) -> SignedBatch:
    """A batch from stored shingle sets (the signature of a set is that of the text it came from)."""
    a, b = _permutations(config.num_perm, config.seed)
    sigs = np.empty((len(offsets) - 1, config.num_perm), dtype=np.uint32)
    lsh_kernels.minhash(shingles.astype(np.uint64), offsets, a, b, sigs)
    return SignedBatch(sigs, shingles, offsets)


def signatures(texts: Sequence[str], config: MinHashConfig) -> np.ndarray:
    """MinHash signatures, one row of `num_perm` uint32 per text."""
    return sign(texts, config).sigs


def optimal_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) minimizing the summed false positive and false negative probability areas
    around `threshold` (equal weights), over every b*r <= num_perm, by numerical integration."""
    grid = np.linspace(0.0, 1.0, 401)
    best, best_cost = (1, num_perm), float("inf")
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            p = 1 - (1 - grid**rows) ** bands
            fp = np.trapezoid(np.where(grid < threshold, p, 0.0), grid)
            fn = np.trapezoid(np.where(grid >= threshold, 1 - p, 0.0), grid)
            if fp + fn < best_cost:
                best, best_cost = (bands, rows), fp + fn
    return best


def banding(threshold: float, num_perm: int) -> tuple[int, int]:
    """LSH bands for a dedup threshold. Candidates are verified on their signatures afterwards, so
    the banding aims lower than the threshold: at the threshold itself, bands tuned to it find a
    pair only about 40% of the time (128 permutations, 0.8); tuned 0.15 lower, about 95%."""
    return optimal_bands(max(0.3, threshold - 0.15), num_perm)


def band_keys(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """One uint64 key per (text, band): a polynomial hash of the band's rows, mixed with the band's
    number so equal rows in different bands do not collide."""
    out = np.empty((len(sigs), bands), dtype=np.uint64)
    lsh_kernels.band_keys(np.ascontiguousarray(sigs), rows, out)
    return out


def signature_params(config: MinHashConfig) -> dict:
    """The scheme and the parameters that decide a signature; an index built with others differs."""
    return {"scheme": SCHEME, **{k: getattr(config, k) for k in ("shingle", "ngram", "lowercase", "num_perm", "seed")}}


def frame_texts(frame: pl.DataFrame) -> list[str]:
    """The text a record is signed by (instruction, input, output joined by newlines), per row."""
    return ["\n".join(row) for row in frame.select("instruction", "input", "output").iter_rows()]


def measure_name(config: MinHashConfig) -> str:
    """How a near-duplicate reject's similarity was measured, as its detail names it."""
    return "Jaccard" if config.verify == "exact" else "estimated Jaccard"


def matches(match: np.ndarray, score: np.ndarray) -> list[tuple[int, float] | None]:
    """The kernel's answer per text: None, or (index row or -1 - earlier batch position, similarity)."""
    return [None if m == lsh_kernels.NO_MATCH else (int(m), float(s)) for m, s in zip(match, score, strict=True)]


def similarity(
    config: MinHashConfig, sig_a: np.ndarray, sig_b: np.ndarray, set_a: np.ndarray, set_b: np.ndarray
) -> float:
    """Two texts' similarity as the index confirms candidates: exact Jaccard of the shingle sets,
    or the share of equal signature values."""
    if config.verify == "exact":
        return float(lsh_kernels.sorted_jaccard(set_a, set_b))
    return float((sig_a == sig_b).mean())


class Index(Protocol):
    """A MinHash index of a dataset's kept records: in memory (`dedup.MinHashIndex`) or shared in
    Redis (`redis_index.RedisMinHashIndex`). A batch is checked and inserted under `locked()`;
    what it added stays only if the batch commits (`commit`), else it is forgotten (`rollback`)."""

    config: MinHashConfig

    @property
    def ids(self) -> Sequence[str]:
        """Indexed records by the row `duplicates` reports them at."""
        ...

    @property
    def measure(self) -> str: ...

    def locked(self) -> AbstractContextManager[None]: ...

    def contains(self, ids: Sequence[str]) -> list[bool]: ...

    def duplicates(self, batch: SignedBatch) -> list[tuple[int, float] | None]: ...

    def add(self, ids: Sequence[str], batch: SignedBatch, remember: bool = True) -> None: ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...

    def sync(self, dataset: str | Path) -> None: ...
