"""ROUGE-L novelty: reject text too similar to anything already in a growing pool.

ROUGE-L F1 between token lists a and b is 2·LCS(a, b) / (|a| + |b|), which is exactly rapidfuzz's
normalized Indel similarity on the same token lists. Tokens are `tokens.rouge_tokens`: on ASCII
text those of the reference `rouge_score` tokenizer without stemming (lowercase, runs of [a-z0-9],
everything else a separator), so English scores equal the reference scorer's; a letter of a script
written without spaces (Chinese, Japanese...) is a token of its own. Tokens are mapped to integers
once and a text is kept as a string of one character per token id (the C++ kernel then compares
code points without converting Python lists, 2.5x faster here, and a pool text costs about half
the memory of a list of ints).

By default the pool is searched with prefix filtering (`novelty_search`): each pool text is
indexed by the first keys of its tokens in one fixed order, a candidate looks up its own first
keys, and of the pool texts it meets only those whose overlap bounds leave room for a score above
the floor (the threshold, or `neighbor_floor` if lower) are scored, exactly. Every pool text
scoring above the floor is among them, so verdicts, and the best score whenever it is above the
floor, are exactly those of scoring every pair (`prune=False`, which scores the pool a slice at a
time in multi-threaded `cdist` calls). The neighbours are the best `neighbors_kept` of the texts
scored: those above the floor are exactly the full search's, in the same order; those at or below
it are the best of the texts the filter examined, which may differ from the full top list (and a
candidate the filter meets no text for gets no neighbours and a best score of 0).

Verdicts name their nearest pool texts by reference, never by copying them: `neighbor_ref` is a
stable id (a record's or seed's id when the pool was given one, else a short content hash) and
the first `SNIPPET_CHARS` characters of the text. So a record's `novelty_neighbors` costs a few
hundred bytes however long the pool's texts are, and the pool itself keeps only tokens and refs.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import Indel

from synth.filters.novelty_index import PrefixIndex
from synth.filters.novelty_search import PrunedSearch
from synth.filters.spill import Strings
from synth.filters.tokens import rouge_tokens

SNIPPET_CHARS = 80
MAX_REF_ID_CHARS = 40


def text_id(text: str) -> str:
    """A short, stable content hash of a text (12 hex digits of its SHA-256)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def snippet(text: str, limit: int = SNIPPET_CHARS) -> str:
    """The text's first `limit` characters with whitespace runs collapsed, "…" added when cut."""
    head = " ".join(text[: limit * 4].split())
    if len(head) > limit or len(text) > limit * 4:
        return head[:limit].rstrip() + "…"
    return head


def neighbor_ref(text: str, ref_id: str | None = None) -> str:
    """How a verdict names a pool text: "<id>: <snippet>".

    The id is `ref_id` (a record or seed id) when given and short, else `text_id(text)`.
    """
    rid = ref_id if ref_id and len(ref_id) <= MAX_REF_ID_CHARS else text_id(text)
    return f"{rid}: {snippet(text)}"


def rouge_l(a: Sequence[str], b: Sequence[str]) -> float:
    """ROUGE-L F1 of two token lists (0.0 when either is empty, as the reference scorer says)."""
    if not a or not b:
        return 0.0
    return Indel.normalized_similarity(a, b)


# Pruned, every pool text scoring above this (or above the threshold, if lower) is found; lower
# floors examine more texts (at 0.5, about eight times as many pairs on the benchmarks' data).
NEIGHBOR_FLOOR = 0.7
# At most this many pair scores are held at once (float64: 128 MiB), whatever the pool's size.
MAX_SCORE_CELLS = 1 << 24
# `check` judges this many candidates at a time: the chunk's own pairs are scored as one matrix.
CHECK_CHUNK = 1024
# Token ids become code points, skipping the surrogates (D800-DFFF), which a str may hold but
# which are best kept out of the kernels' way.
_SURROGATES = 0x800
MAX_VOCAB = 0x110000 - _SURROGATES


def _char(token_id: int) -> str:
    if token_id >= MAX_VOCAB:
        raise ValueError(f"the novelty pool holds more than {MAX_VOCAB} distinct tokens")
    return chr(token_id if token_id < 0xD800 else token_id + _SURROGATES)


@dataclass
class NoveltyVerdict:
    """A candidate's verdict; `neighbors` are `neighbor_ref`s of its most similar pool texts, best
    first, with their scores in `neighbor_scores`."""

    text: str
    kept: bool
    max_score: float
    neighbors: list[str]
    neighbor_scores: list[float]


@dataclass
class RougeNoveltyIndex:
    """A pool of texts; candidates scoring above `threshold` against any pool text are rejected.

    `check` processes candidates in order and adds each kept one to the pool before the next is
    judged, so two near-identical candidates of one batch cannot both get in. The pool keeps each
    text's tokens and its `neighbor_ref`, not the text.

    `prune` (the default) scores only the pool texts the prefix filter examines: every text scoring
    above min(`threshold`, `neighbor_floor`) among them (see the module's docstring); `prune=False`
    scores every pair. Both give the same verdicts, the same best score when it is above that
    floor, and the same neighbours above it; `search.scored` counts the pairs the pruned search
    scored.
    """

    threshold: float = 0.7
    neighbors_kept: int = 10
    workers: int = -1
    prune: bool = True
    neighbor_floor: float = NEIGHBOR_FLOOR
    # Each pool text's `neighbor_ref`, in a mapped file (`Spill`): disk, not memory, per text.
    refs: Strings = field(default_factory=Strings)
    _tokens: list[str] = field(default_factory=list)
    # Each token's id, as the character that stands for it in a text's code (`_char`).
    _vocab: dict[str, str] = field(default_factory=dict)
    # The vocabulary's tokens by id, and its size once each pool text had joined (for `truncate`).
    _id_tokens: list[str] = field(default_factory=list)
    _vocab_sizes: array[int] = field(default_factory=lambda: array("q"))

    def __post_init__(self) -> None:
        self._postings = PrefixIndex(min(self.threshold, self.neighbor_floor))
        self.search = PrunedSearch(self._postings, self._tokens)

    def _encode(self, text: str) -> str:
        vocab = self._vocab
        chars = []
        for tok in rouge_tokens(text):
            c = vocab.get(tok)
            if c is None:
                c = vocab[tok] = _char(len(self._id_tokens))
                self._id_tokens.append(tok)
            chars.append(c)
        return "".join(chars)

    def _encode_candidate(self, text: str) -> tuple[str, list[str]]:
        """A candidate's code without growing the vocabulary, and its tokens the vocabulary lacks,
        in order: those get ids len(vocab), len(vocab)+1, ... here, the ids `_admit` gives them
        when the candidate joins the pool. So ids, hence the pruned search's key order, depend
        only on the pool's texts in pool order, not on the rejected candidates a run happened to
        see: a resumed run rebuilds the same order from its committed tasks."""
        vocab = self._vocab
        new: dict[str, str] = {}
        chars = [vocab.get(tok) or new.setdefault(tok, _char(len(vocab) + len(new))) for tok in rouge_tokens(text)]
        return "".join(chars), list(new)

    def _admit(self, new: list[str]) -> None:
        for tok in new:
            self._vocab[tok] = _char(len(self._id_tokens))
            self._id_tokens.append(tok)

    def _append(self, ref: str, code: str) -> None:
        self.refs.append(ref)
        self._tokens.append(code)
        self._vocab_sizes.append(len(self._id_tokens))

    def add(self, texts: Sequence[str], ids: Sequence[str | None] | None = None) -> None:
        """Add texts to the pool; `ids` (one per text, None for none) name them in verdicts."""
        if ids is not None and len(ids) != len(texts):
            raise ValueError(f"{len(ids)} ids for {len(texts)} texts")
        try:
            for i, text in enumerate(texts):
                code = self._encode(text)
                self._append(neighbor_ref(text, ids[i] if ids is not None else None), code)
        finally:
            if self.prune:
                self._postings.extend(self._tokens[len(self._postings) :])

    def __len__(self) -> int:
        return len(self.refs)

    def truncate(self, size: int) -> None:
        """Forget every pool text added after the first `size` (a batch that was not committed),
        and the tokens only they brought: a rolled-back batch leaves the token ids (the pruned
        search's key order) as if it had never run."""
        if self.prune:
            self._postings.truncate(size)
        self.refs.truncate(size)
        del self._tokens[size:]
        del self._vocab_sizes[size:]
        known = self._vocab_sizes[-1] if size else 0
        for tok in self._id_tokens[known:]:
            del self._vocab[tok]
        del self._id_tokens[known:]

    def _scores(self, queries: list[str], choices: list[str]) -> np.ndarray:
        if not queries or not choices:
            return np.zeros((len(queries), len(choices)), dtype=np.float64)
        scores = process.cdist(
            queries, choices, scorer=Indel.normalized_similarity, processor=None, workers=self.workers, dtype=np.float64
        )
        # rapidfuzz says 1.0 for two empty lists; ROUGE-L says 0.
        empty_q = np.array([not q for q in queries])
        empty_c = np.array([not c for c in choices])
        scores[empty_q, :] = 0.0
        scores[:, empty_c] = 0.0
        return scores

    def _pool_top(self, queries: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Each query's `k` best pool scores and their pool indices (-1: none), best first, ties
        to the earlier pool text. Unpruned, the pool is scored a slice at a time, so memory holds
        at most `MAX_SCORE_CELLS` scores whatever the pool's size; the result equals a full row's
        top k."""
        top_scores = np.full((len(queries), k), -1.0)
        top_index = np.full((len(queries), k), -1, dtype=np.int64)
        if not queries or not self._tokens:
            return top_scores, top_index
        chunk = max(256, MAX_SCORE_CELLS // len(queries))
        for start in range(0, len(self._tokens), chunk):
            scores = self._scores(queries, self._tokens[start : start + chunk])
            width = min(k, scores.shape[1])
            # Every column at or above each row's k-th best of this slice (ties included).
            cut = np.partition(scores, scores.shape[1] - width, axis=1)[:, scores.shape[1] - width]
            rows, cols = np.nonzero(scores >= cut[:, None])
            top_scores, top_index = _merge_top(top_scores, top_index, rows, scores[rows, cols], cols + start)
        return top_scores, top_index

    def check(self, candidates: Sequence[str], add: bool = True) -> list[NoveltyVerdict]:
        """Judge candidates in order against the pool and the candidates kept before them.

        With `add`, kept candidates join the pool; without, the pool is left as it was (call
        `add` later, once the caller has committed them). Pruned, each candidate is searched on
        its own and a kept one joins the pool (and its postings) before the next is judged.
        Unpruned, candidates are judged `CHECK_CHUNK` at a time: those kept in earlier chunks join
        the pool meanwhile. Either way memory is bounded by the chunk, not by how many candidates
        one call brings.
        """
        size = len(self.refs)
        verdicts: list[NoveltyVerdict] = []
        # The candidates kept may be taken out again: a rebuild of the postings keeps the old ones.
        self._postings.hold = self.prune
        try:
            try:
                if self.prune:
                    verdicts = [self._check_one(text) for text in candidates]
                else:
                    for start in range(0, len(candidates), CHECK_CHUNK):
                        for verdict, ref, code in self._check_chunk(candidates[start : start + CHECK_CHUNK]):
                            verdicts.append(verdict)
                            if verdict.kept:
                                self._append(ref, code)
            except BaseException:
                self.truncate(size)
                raise
            if not add:
                self.truncate(size)
        finally:
            self._postings.release()
        return verdicts

    def _check_one(self, text: str) -> NoveltyVerdict:
        """Pruned: one candidate's verdict against the pool; a kept candidate joins the pool."""
        code, new = self._encode_candidate(text)
        prefix = self._postings.prefix(code)
        scores, index = self.search.one(code, max(1, self.neighbors_kept), prefix)
        self.search.pairs += len(self._postings)
        best = float(scores[0]) if scores.size else 0.0
        kept = best <= self.threshold
        shown = index[: self.neighbors_kept].tolist()
        verdict = NoveltyVerdict(
            text=text,
            kept=kept,
            max_score=best,
            neighbors=[self.refs[p] for p in shown],
            neighbor_scores=[float(x) for x in scores[: len(shown)]],
        )
        if kept:
            self._admit(new)
            self._append(neighbor_ref(text), code)
            self._postings.add(code, prefix)
        return verdict

    def _check_chunk(self, candidates: Sequence[str]) -> list[tuple[NoveltyVerdict, str, str]]:
        """Unpruned: verdicts of one chunk against the pool (earlier chunks' kept candidates
        included), with each candidate's ref and code. Kept candidates of the chunk are not added
        here."""
        encoded = [self._encode(c) for c in candidates]
        k = max(1, self.neighbors_kept)
        pool_scores, pool_index = self._pool_top(encoded, k)
        within = self._scores(encoded, encoded)
        out: list[tuple[NoveltyVerdict, str, str]] = []
        accepted: list[int] = []
        pool_size = len(self.refs)
        refs: dict[int, str] = {}

        def ref(i: int) -> str:
            if i not in refs:
                refs[i] = neighbor_ref(candidates[i])
            return refs[i]

        for i, text in enumerate(candidates):
            found = pool_index[i] >= 0
            # Positions as in one row over the pool, then the accepted candidates.
            positions = np.concatenate([pool_index[i][found], pool_size + np.arange(len(accepted))])
            row = np.concatenate([pool_scores[i][found], within[i, accepted]])
            best = float(row.max()) if row.size else 0.0
            order = np.lexsort((positions, -row))[: self.neighbors_kept]
            kept = best <= self.threshold
            verdict = NoveltyVerdict(
                text=text,
                kept=kept,
                max_score=best,
                neighbors=[
                    self.refs[p] if p < pool_size else ref(accepted[p - pool_size]) for p in positions[order].tolist()
                ],
                neighbor_scores=[float(x) for x in row[order]],
            )
            out.append((verdict, ref(i) if kept else "", encoded[i]))
            if kept:
                accepted.append(i)
        return out


def _merge_top(
    top_scores: np.ndarray, top_index: np.ndarray, rows: np.ndarray, scores: np.ndarray, index: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The best `k` per row (k: the width of `top_scores`) of the current top and new (row, score,
    index) entries, best first, ties to the lower index; -1 fills rows with fewer."""
    n, k = top_scores.shape
    all_rows = np.concatenate([np.repeat(np.arange(n), k), rows])
    all_scores = np.concatenate([top_scores.ravel(), scores])
    all_index = np.concatenate([top_index.ravel(), index])
    valid = all_index >= 0
    all_rows, all_scores, all_index = all_rows[valid], all_scores[valid], all_index[valid]
    order = np.lexsort((all_index, -all_scores, all_rows))
    all_rows, all_scores, all_index = all_rows[order], all_scores[order], all_index[order]
    rank = np.arange(all_rows.size) - np.searchsorted(all_rows, all_rows)
    take = rank < k
    merged_scores = np.full((n, k), -1.0)
    merged_index = np.full((n, k), -1, dtype=np.int64)
    merged_scores[all_rows[take], rank[take]] = all_scores[take]
    merged_index[all_rows[take], rank[take]] = all_index[take]
    return merged_scores, merged_index
