"""MinHash signatures for whole batches at once, and LSH banding.

Scheme "synth-minhash-v1" (recorded with every persisted index, with its parameters):
- text: instruction, input and output joined by newlines; lowercased when configured;
- word shingles: runs of \\w+ tokens, n at a time (a text shorter than n is one shingle); each
  distinct token is hashed once with blake2b (8 bytes) and an n-gram's hash combines its tokens'
  hashes polynomially (mod 2**64); char shingles: n consecutive characters (whitespace collapsed),
  hashed polynomially over their code points;
- shingle hashes are cut to 32 bits; permutation k maps h to the top 32 bits of
  (a_k*h + b_k) mod 2**64 (multiply-shift hashing; a_k odd), with (a_k, b_k) drawn from numpy's
  RandomState(seed). datasketch uses a Mersenne-prime modulus instead; the division it costs was
  most of the time of a batch here, and the multiply-shift family is universal as well;
- a signature is the per-permutation minimum over a text's shingles.
Every step after shingling is a numpy array operation over the whole batch.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from functools import cache

import numpy as np
import polars as pl

from synth.schemas.curation import MinHashConfig

SCHEME = "synth-minhash-v1"
_MAX32 = np.uint64((1 << 32) - 1)
_MULT = np.uint64(1_000_003)
_TOKEN = re.compile(r"\w+")
_SPACE = re.compile(r"\s+")


@cache
def _token_hash(token: str) -> int:
    return int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "little")


def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    gen = np.random.RandomState(seed)
    a = gen.randint(0, np.iinfo(np.uint64).max, size=num_perm, dtype=np.uint64) | np.uint64(1)
    b = gen.randint(0, np.iinfo(np.uint64).max, size=num_perm, dtype=np.uint64)
    return a, b


def _permute(h: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(num_perm, len(h)) uint32: the top 32 bits of a*h + b (mod 2**64), per permutation.
    Permutations are rows so the per-text minimum runs along contiguous memory."""
    with np.errstate(over="ignore"):
        return ((a[:, None] * h[None, :] + b[:, None]) >> np.uint64(32)).astype(np.uint32)


def _ngram_hashes(codes: np.ndarray, n: int) -> np.ndarray:
    """Polynomial hashes (mod 2**64) of every window of n values; one hash of all if shorter."""
    if len(codes) <= n:
        h = np.uint64(0)
        with np.errstate(over="ignore"):
            for c in codes:
                h = h * _MULT + np.uint64(c)
        return np.array([h], dtype=np.uint64)
    windows = np.lib.stride_tricks.sliding_window_view(codes, n)
    powers = _MULT ** np.arange(n - 1, -1, -1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        return (windows * powers).sum(axis=1, dtype=np.uint64)


def shingle_hashes(text: str, config: MinHashConfig) -> np.ndarray:
    """The 32-bit hashes of one text's shingles (at least one, even for an empty text)."""
    if config.lowercase:
        text = text.lower()
    if config.shingle == "word":
        tokens = _TOKEN.findall(text)
        codes = np.fromiter((_token_hash(t) for t in tokens), dtype=np.uint64, count=len(tokens))
    else:
        collapsed = _SPACE.sub(" ", text).strip()
        codes = np.frombuffer(collapsed.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    return _ngram_hashes(codes, config.ngram) & _MAX32


def _word_shingles(texts: Sequence[str], config: MinHashConfig) -> tuple[np.ndarray, np.ndarray]:
    """(flat shingle hashes, shingles per text) for a batch, tokenized and hashed column-wise."""
    series = pl.Series(texts, dtype=pl.String)
    if config.lowercase:
        series = series.str.to_lowercase()
    tokens = series.str.extract_all(r"\w+")
    counts = tokens.list.len().fill_null(0).to_numpy().astype(np.int64)
    flat_tokens = tokens.explode().drop_nulls()
    unique = flat_tokens.unique()
    lookup = pl.DataFrame(
        {"t": unique, "h": np.fromiter((_token_hash(t) for t in unique), dtype=np.uint64, count=len(unique))}
    )
    codes = flat_tokens.to_frame("t").join(lookup, on="t", how="left", maintain_order="left")["h"].to_numpy()
    n = config.ngram
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    long_docs = counts >= n
    # Windows of n tokens that start inside a text and end inside it.
    if len(codes) >= n:
        windows = np.lib.stride_tricks.sliding_window_view(codes, n)
        powers = _MULT ** np.arange(n - 1, -1, -1, dtype=np.uint64)
        with np.errstate(over="ignore"):
            all_hashes = (windows * powers).sum(axis=1, dtype=np.uint64)
    else:
        all_hashes = np.empty(0, dtype=np.uint64)
    per_text = np.where(long_docs, counts - n + 1, 1)
    pieces = []
    for i in np.flatnonzero(~long_docs):  # short texts: one shingle of everything they hold
        pieces.append((i, _ngram_hashes(codes[starts[i] : starts[i] + counts[i]], n)))
    window_index = (
        np.concatenate([np.arange(s, s + c - n + 1) for s, c in zip(starts[long_docs], counts[long_docs], strict=True)])
        if long_docs.any()
        else np.empty(0, dtype=np.int64)
    )
    out = np.empty(int(per_text.sum()), dtype=np.uint64)
    text_offsets = np.concatenate([[0], np.cumsum(per_text)[:-1]])
    long_positions = (
        np.concatenate([np.arange(o, o + k) for o, k in zip(text_offsets[long_docs], per_text[long_docs], strict=True)])
        if long_docs.any()
        else np.empty(0, dtype=np.int64)
    )
    out[long_positions] = all_hashes[window_index]
    for i, h in pieces:
        out[text_offsets[i]] = h[0]
    return out & _MAX32, per_text


def signatures(texts: Sequence[str], config: MinHashConfig, chunk: int = 4096) -> np.ndarray:
    """MinHash signatures, one row of `num_perm` uint32 per text."""
    a, b = _permutations(config.num_perm, config.seed)
    out = np.empty((len(texts), config.num_perm), dtype=np.uint32)
    for start in range(0, len(texts), chunk):
        part = texts[start : start + chunk]
        if config.shingle == "word":
            flat, lengths = _word_shingles(part, config)
        else:
            parts = [shingle_hashes(t, config) for t in part]
            lengths = np.array([len(p) for p in parts])
            flat = np.concatenate(parts)
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        out[start : start + len(part)] = np.minimum.reduceat(_permute(flat, a, b), offsets, axis=1).T
    return out


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
    """One uint64 key per (text, band): a polynomial hash of the band's rows."""
    view = sigs[:, : bands * rows].astype(np.uint64).reshape(len(sigs), bands, rows)
    powers = _MULT ** np.arange(rows, dtype=np.uint64)
    with np.errstate(over="ignore"):
        keys = (view * powers).sum(axis=2, dtype=np.uint64)
    # Mix in the band number so equal rows in different bands do not collide.
    return keys ^ (np.arange(bands, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15))


def signature_params(config: MinHashConfig) -> dict:
    """The scheme and the parameters that decide a signature; an index built with others differs."""
    return {"scheme": SCHEME, **{k: getattr(config, k) for k in ("shingle", "ngram", "lowercase", "num_perm", "seed")}}


def frame_texts(frame: pl.DataFrame) -> list[str]:
    """The text a record is signed by (instruction, input, output joined by newlines), per row."""
    return ["\n".join(row) for row in frame.select("instruction", "input", "output").iter_rows()]


def mark_within_batch(sigs: np.ndarray, keys: np.ndarray, found: list, threshold: float) -> None:
    """Mark each text of a batch that nearly duplicates an earlier text of the same batch, as
    (-1 - earlier position, estimated Jaccard), unless either is already marked."""
    frame = pl.DataFrame({"key": keys.ravel(), "new": np.repeat(np.arange(len(sigs)), keys.shape[1])})
    inner = frame.join(frame, on="key", suffix="_other").filter(pl.col("new_other") < pl.col("new"))
    inner = inner.select("new", "new_other").unique().sort("new", "new_other")
    if not inner.height:
        return
    left, right = inner["new"].to_numpy(), inner["new_other"].to_numpy()
    scores = estimated_jaccard(sigs[left], sigs[right])
    for i, j, s in zip(left, right, scores, strict=True):
        if s >= threshold and found[i] is None and found[j] is None:
            found[i] = (-1 - int(j), float(s))


def estimated_jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise share of equal signature values (the MinHash estimate of Jaccard similarity)."""
    return (a == b).mean(axis=1)
