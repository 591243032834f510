"""What a person asks of a dataset first: the funnel, the mix, the lengths, the scores, samples.

Computed with polars over the shards the manifest lists; used by `synth inspect`, the notebook and
the dataset card, so all three show the same figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
from typing_extensions import TypedDict

from synth.schemas import Manifest
from synth.shards.layout import read_manifest
from synth.shards.read import scan

_LEAD_WORD = r"^[^A-Za-z]*([A-Za-z]+)"


def funnel(path: str | Path) -> pl.DataFrame:
    """One row per (phase, stage, reason) with its count, plus a `kept` row: the whole fate of every
    candidate. The phase tells the generator's own rejects from the curation chain's."""
    rejects = (
        scan(path, "rejects")
        .group_by("phase", "stage", "reason")
        .agg(pl.len().alias("count"))
        .collect()
        .sort(["phase", "stage", "count"], descending=[False, False, True], nulls_last=True)
    )
    kept = pl.DataFrame({"phase": [""], "stage": ["kept"], "reason": [""], "count": [read_manifest(path).rows("kept")]})
    return pl.concat([kept, rejects.cast({"count": pl.Int64})], how="vertical_relaxed")


def length_stats(kept: pl.LazyFrame) -> pl.DataFrame:
    """Word counts of instruction, input and output: mean and quantiles."""
    rows = []
    for column in ("instruction", "input", "output"):
        words = pl.col(column).str.split(" ").list.len().alias("words")
        stats = kept.select(
            pl.lit(column).alias("field"),
            words.mean().alias("mean"),
            words.quantile(0.5).alias("p50"),
            words.quantile(0.9).alias("p90"),
            words.max().alias("max"),
        )
        rows.append(stats)
    return pl.concat(rows).collect()


def leading_verbs(kept: pl.LazyFrame, top: int = 15) -> pl.DataFrame:
    """The most common first words of instructions (Self-Instruct's view of diversity, without a parser)."""
    return (
        kept.select(pl.col("instruction").str.extract(_LEAD_WORD, 1).str.to_lowercase().alias("verb"))
        .drop_nulls()
        .group_by("verb")
        .agg(pl.len().alias("count"))
        .sort(["count", "verb"], descending=[True, False])
        .head(top)
        .collect()
    )


Rows = list[dict[str, Any]]  # a table's rows, column -> value


class RunRow(TypedDict):
    run_id: str
    generator: str
    model: str
    status: str
    kept: int
    rejected: int


class DatasetSummary(TypedDict):
    """What `synth inspect` shows of a dataset (and `--json` writes): counts, the runs, the funnel
    and the mixes as table rows, and a few sampled records and rejects."""

    path: str
    kept: int
    rejected: int
    keep_rate: float
    runs: list[RunRow]
    funnel: Rows
    generators: Rows
    lengths: Rows
    leading_verbs: Rows
    judge_scores: Rows
    evolution_rounds: Rows
    languages: Rows
    abilities: Rows
    sources: Rows
    classification_share: float
    samples: Rows
    reject_samples: Rows
    recycled: Rows


def summarize(path: str | Path, sample: int = 3, seed: int = 0) -> DatasetSummary:
    """Every figure of the inspection view as plain JSON-able data."""
    manifest = read_manifest(path)
    kept = scan(path, "kept")
    rejects = scan(path, "rejects")
    n_kept, n_rejected = manifest.rows("kept"), manifest.rows("rejects")
    generators = kept.group_by("generator").agg(pl.len().alias("count")).sort("count", descending=True).collect()
    scores = kept.filter(pl.col("judge_score").is_not_null()).group_by("judge_score").agg(pl.len().alias("count"))
    rounds = kept.filter(pl.col("round").is_not_null()).group_by("round").agg(pl.len().alias("count"))
    sources = kept.filter(pl.col("source_doc").is_not_null()).group_by("source_doc").agg(pl.len().alias("count"))

    def mix(column: str) -> Rows:
        counts = kept.filter(pl.col(column).is_not_null()).group_by(column).agg(pl.len().alias("count"))
        return counts.sort(["count", column], descending=[True, False]).collect().to_dicts()

    kept_df = kept.collect()
    rejects_df = rejects.collect()
    return {
        "path": str(path),
        "kept": n_kept,
        "rejected": n_rejected,
        "keep_rate": n_kept / (n_kept + n_rejected) if n_kept + n_rejected else 0.0,
        "runs": [
            {
                "run_id": r.run_id,
                "generator": r.generator,
                "model": r.model,
                "status": r.status,
                "kept": r.kept,
                "rejected": r.rejected,
            }
            for r in manifest.runs.values()
        ],
        "funnel": funnel(path).to_dicts(),
        "generators": generators.to_dicts(),
        "lengths": length_stats(kept).to_dicts(),
        "leading_verbs": leading_verbs(kept).to_dicts(),
        "judge_scores": scores.sort("judge_score").collect().to_dicts(),
        "evolution_rounds": rounds.sort("round").collect().to_dicts(),
        "languages": mix("language"),
        "abilities": against_targets(mix("ability"), manifest),
        "sources": sources.sort("count", descending=True).head(20).collect().to_dicts(),
        "classification_share": kept_df.select(pl.col("is_classification").cast(pl.Float64).mean()).item() or 0.0,
        "samples": _sample(kept_df, sample, seed, ["id", "instruction", "input", "output", "generator"]),
        "reject_samples": _sample(rejects_df, sample, seed, ["id", "stage", "reason", "instruction", "detail"]),
        "recycled": _sample(_before_and_after(kept_df), sample, seed, RECYCLED_COLUMNS),
    }


RECYCLED_COLUMNS = ["variant", "instruction before", "instruction after", "output before", "output after"]


def _before_and_after(kept: pl.DataFrame) -> pl.DataFrame:
    """Recycled records (`synth recycle`) beside the pairs they were made from."""
    block = pl.col("reflection").struct
    return kept.filter(pl.col("reflection").is_not_null()).select(
        block.field("variant").alias("variant"),
        block.field("original_instruction").alias("instruction before"),
        pl.col("instruction").alias("instruction after"),
        block.field("original_output").alias("output before"),
        pl.col("output").alias("output after"),
    )


def against_targets(rows: Rows, manifest: Manifest) -> Rows:
    """The ability mix with each ability's target where a run asked for a mixture (the latest
    run's targets win), abilities with a target but no record included."""
    targets: dict[str, int] = {}
    for run in manifest.runs.values():
        targets.update(run.curation.get("mixture") or {})
    if not targets:
        return rows
    seen = {r["ability"] for r in rows}
    rows = [*rows, *({"ability": a, "count": 0} for a in targets if a not in seen)]
    return [{**r, "target": targets.get(r["ability"])} for r in rows]


def _sample(frame: pl.DataFrame, n: int, seed: int, columns: list[str]) -> Rows:
    if n <= 0 or frame.is_empty():
        return []
    return frame.sample(min(n, frame.height), seed=seed).select(columns).to_dicts()


def lineage(path: str | Path, record_id: str) -> list[dict[str, Any]]:
    """The chain from a record back to its root through `parent_id` (the record first)."""
    kept = scan(path, "kept").select("id", "parent_id", "instruction", "operation", "round").collect()
    by_id = {row["id"]: row for row in kept.to_dicts()}
    chain: list[dict[str, Any]] = []
    current = by_id.get(record_id)
    while current is not None and len(chain) <= len(by_id):
        chain.append(current)
        current = by_id.get(current["parent_id"]) if current["parent_id"] else None
    return chain
