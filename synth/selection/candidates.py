"""A dataset's records as selection candidates: read once, scored by what the methods need (each
score computed once and stored), and a method's choice among them with a reason for every record
left out."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from synth.engines.base import Engine
from synth.schemas.selection import METHOD_NEEDS, SelectionConfig
from synth.selection.embeddings import Embedder, embedder_key, ensure_embeddings, unit_rows
from synth.selection.scorers import Failure, IFDScorer, RatingScorer, ResponseTokens, Scorer, scorer_key
from synth.selection.selectors import (
    Selection,
    select_deita,
    select_ifd,
    select_kcenter,
    select_longest,
    select_random,
)
from synth.selection.store import Say, ensure_scores
from synth.shards.read import scan

SCORE_COLUMNS = {
    "complexity": "complexity_score",
    "quality": "quality_score",
    "ifd": "ifd",
    "tokens": "response_tokens",
}
IFD_FLAG = "ifd>=1"  # the tag of records whose instruction does not make the response easier


class SelectionInputError(ValueError):
    """A dataset that cannot be selected from as asked; the message names it."""


def load_items(dataset: str | Path) -> pl.DataFrame:
    """The dataset's kept records as id, instruction, input, output: one row per id (the first),
    sorted by id so that every tie-break is independent of the shards' order."""
    frame = scan(dataset).select("id", "instruction", "input", "output").collect()
    if frame.is_empty():
        raise SelectionInputError(f"{dataset}: no kept records to select from")
    frame = frame.with_columns(pl.col("input").fill_null(""), pl.col("output").fill_null(""))
    return frame.unique("id", keep="first").sort("id")


def needs_of(methods: Iterable[str]) -> set[str]:
    return set().union(*(METHOD_NEEDS[m] for m in methods))


@dataclass
class Candidates:
    """The candidates (sorted by id), their score columns (null where not computed or failed), the
    failures by scorer name and record id, and their unit embeddings when computed."""

    items: pl.DataFrame
    scores: pl.DataFrame
    failures: dict[str, dict[str, Failure]] = field(default_factory=dict)
    embeddings: np.ndarray | None = None
    scorers: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> key and description

    def column(self, name: str) -> np.ndarray:
        """A score column as floats, NaN where missing."""
        return self.scores[name].cast(pl.Float64).fill_null(float("nan")).to_numpy()

    def deita_score(self) -> np.ndarray:
        """Deita's combined score: complexity x quality."""
        return self.column("complexity_score") * self.column("quality_score")


def score_candidates(
    items: pl.DataFrame,
    needs: set[str],
    config: SelectionConfig,
    root: str | Path,
    engine: Callable[[], Engine],
    tokenizer: Any | None,
    tokenizer_name: str,
    embedder: Callable[[], Embedder] | None = None,
    say: Say | None = None,
) -> Candidates:
    """Score `items` with what `needs` names (complexity, quality, ifd, tokens, embedding),
    reusing every score stored under `root`. `engine` and `embedder` are called only when a model
    is needed, so a selection whose scores are stored loads none."""
    scorers: list[Scorer] = [ResponseTokens(tokenizer, tokenizer_name)]
    model: Engine | None = None
    for aspect in ("complexity", "quality", "ifd"):
        if aspect not in needs:
            continue
        model = model or engine()
        if aspect == "ifd":
            scorers.append(IFDScorer(model, config.max_ifd_tokens))
        else:
            scorers.append(RatingScorer(aspect, model, config.score_sampling, config.language))
    scores = items.select("id")
    failures: dict[str, dict[str, Failure]] = {}
    described: dict[str, dict[str, Any]] = {}
    for scorer in scorers:
        rows, transient = ensure_scores(items, scorer, root, config.score_batch, say)
        column = next(iter(scorer.columns))
        scores = scores.join(rows.select("id", column), on="id", how="left", maintain_order="left")
        failed = {
            r["id"]: Failure(r["failure"], r["detail"] or "", r["raw"] or "")
            for r in rows.filter(pl.col("failure").is_not_null()).iter_rows(named=True)
        }
        failed.update(transient)
        failures[scorer.name] = failed
        described[scorer.name] = {"key": scorer_key(scorer), **scorer.describe()}
    for name in SCORE_COLUMNS.values():
        if name not in scores.columns:
            scores = scores.with_columns(pl.lit(None, dtype=pl.Float64).alias(name))
    embeddings = None
    if "embedding" in needs:
        if embedder is None:
            raise ValueError("embeddings are needed: give an embedder")
        built = embedder()
        embeddings = ensure_embeddings(items, built, str(root), config.score_batch, say)
        if getattr(config.embedding, "center", False) and len(embeddings) > 1:
            embeddings = unit_rows(embeddings - embeddings.mean(axis=0))
        described["embedding"] = {"key": embedder_key(built.describe()), **built.describe()}
    return Candidates(items, scores, failures, embeddings, described)


@dataclass
class Choice:
    """A method's selection and why each other candidate was left out: `failed` (a score the
    method needs is missing, by record id, with the failure) and `left_out` (reason by record id)."""

    method: str
    selection: Selection
    failed: dict[str, Failure]
    left_out: dict[str, tuple[str, str]]  # id -> (reason, detail)


def choose(candidates: Candidates, method: str, config: SelectionConfig) -> Choice:
    """Run `method` for `config.budget` over the candidates that have every score it needs."""
    ids = candidates.items["id"].to_list()
    needs = METHOD_NEEDS[method] - {"embedding"}
    failed: dict[str, Failure] = {}
    for need in needs:
        for rid, failure in candidates.failures.get(need, {}).items():
            failed.setdefault(rid, failure)
    usable = np.array([rid not in failed for rid in ids], dtype=bool)
    left_out: dict[str, tuple[str, str]] = {}
    # Records a score failed for drop out of the method's view; indices map back afterwards.
    where = np.flatnonzero(usable)
    budget = config.budget
    if method == "deita":
        assert candidates.embeddings is not None
        picked = select_deita(candidates.deita_score()[where], candidates.embeddings[where], budget, config.threshold)
    elif method == "ifd":
        ifd = candidates.column("ifd")[where]
        picked = select_ifd(ifd, budget)
        for k in np.flatnonzero(ifd >= 1.0):
            left_out[ids[where[k]]] = (
                "ifd >= 1",
                f"ifd {ifd[k]:.4f}: the instruction does not make the response easier",
            )
    elif method == "longest":
        picked = select_longest(candidates.column("response_tokens")[where], budget)
    elif method == "kcenter":
        assert candidates.embeddings is not None
        picked = select_kcenter(candidates.embeddings[where], budget, config.seed)
    elif method == "random":
        picked = select_random(len(where), budget, config.seed)
    else:
        raise ValueError(f"unknown selection method {method!r}")
    if len(picked.refused):
        for k in np.flatnonzero(picked.refused):
            left_out[ids[where[k]]] = (
                "too similar to a selected record",
                f"cosine distance <= {config.threshold} to a record selected before it",
            )
    selection = Selection(where[picked.indices], picked.distances)
    chosen = {ids[int(i)] for i in selection.indices}
    reason = f"outside the budget of {budget} by {method}"
    for rid in ids:
        if rid not in chosen and rid not in failed and rid not in left_out:
            left_out[rid] = (reason, "")
    return Choice(method, selection, failed, left_out)
