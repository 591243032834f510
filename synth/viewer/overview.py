"""The figures of a dataset's overview page: the funnel from generated to kept, record lengths, the
generator, ability and language mix, leading verbs, tokens per kept record, and the reports stored
beside the manifest (proxy evaluation, judge calibration).

Every figure is computed lazily over the good shards; what gets collected is a count per group or
one integer per record, never the records' text. The same definitions as `synth inspect`
(`synth.shards.summary`), whose functions are reused where they take a LazyFrame.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from synth.schemas.records import reject_stages
from synth.shards.card import (
    CALIBRATION_FILE,
    EVALUATION_FILE,
    calibration_lines,
    evaluation_lines,
    read_report,
    stored_section,
)
from synth.shards.summary import against_targets, leading_verbs
from synth.viewer.data import Snapshot

LENGTH_FIELDS = ("instruction", "input", "output")
# Word-count buckets of the length histogram: (label, upper bound inclusive).
BUCKETS = [("1-10", 10), ("11-25", 25), ("26-50", 50), ("51-100", 100), ("101-250", 250), ("251-500", 500)]
LAST_BUCKET = ">500"
PHASE_ORDER = ["generation", "curation"]
RUN_FIELDS = {"run_id", "generator", "model", "status", "kept", "rejected"}


def overview(snapshot: Snapshot) -> dict[str, Any]:
    """Every figure of the overview page as plain data."""
    kept = snapshot.frame("kept")
    manifest = snapshot.manifest
    return {
        "kept": snapshot.rows("kept"),
        "rejects": snapshot.rows("rejects"),
        "runs": [r.model_dump(include=RUN_FIELDS) for r in manifest.runs.values()],
        "funnel": funnel_steps(snapshot),
        "lengths": lengths(kept),
        "generators": _mix(kept, "generator"),
        "languages": _mix(kept, "language"),
        "abilities": against_targets(_mix(kept, "ability"), manifest),
        "leading_verbs": _streamed(lambda: leading_verbs(kept)).to_dicts(),
        "tokens": tokens(snapshot),
        "reports": stored_reports(snapshot.root),
    }


def _streamed(compute: Any) -> pl.DataFrame:
    """Run a function of `synth.shards.summary` that collects a LazyFrame itself, on the streaming
    engine: it reads the shards in batches instead of whole columns."""
    with pl.Config(engine_affinity="streaming"):
        return compute()  # type: ignore[no-any-return]


def funnel_steps(snapshot: Snapshot) -> dict[str, Any]:
    """Generated (kept + rejects) -> each reject stage, in pipeline order, with what remains after
    it -> kept. Each stage lists its reasons, most common first."""
    counts = (
        snapshot.frame("rejects")
        .group_by("phase", "stage", "reason")
        .agg(pl.len().alias("count"))
        .collect(engine="streaming")
        .to_dicts()
    )
    stages: dict[tuple[str, str], list[tuple[str, int]]] = {}
    for row in counts:
        stages.setdefault((row["phase"] or "", row["stage"] or ""), []).append((row["reason"] or "", row["count"]))

    known = reject_stages()

    def order(key: tuple[str, str]) -> tuple[int, int, str]:
        phase, stage = key
        rank = known.index(stage) if stage in known else len(known)
        return (PHASE_ORDER.index(phase) if phase in PHASE_ORDER else len(PHASE_ORDER), rank, stage)

    generated = snapshot.rows("kept") + snapshot.rows("rejects")
    remaining = generated
    steps = []
    for phase, stage in sorted(stages, key=order):
        reasons = sorted(stages[(phase, stage)], key=lambda r: (-r[1], r[0]))
        dropped = sum(n for _, n in reasons)
        remaining -= dropped
        steps.append({"phase": phase, "stage": stage, "dropped": dropped, "remaining": remaining, "reasons": reasons})
    return {"generated": generated, "steps": steps, "kept": snapshot.rows("kept")}


def _words(column: str) -> pl.Expr:
    """Words as `synth inspect` counts them: the pieces of a split on spaces (one more than the
    spaces, counted without building the pieces; an empty text is one empty piece)."""
    return (pl.col(column).str.count_matches(" ", literal=True).cast(pl.Int64) + 1).alias(column)


def lengths(kept: pl.LazyFrame) -> dict[str, Any]:
    """Word counts of instruction, input and output: mean and quantiles per field (the figures of
    `synth inspect`), and a histogram in which empty texts have a row of their own. The shards
    are streamed; what is collected is an integer and a flag per record and field."""
    empty = [(pl.col(c) == "").alias(f"{c} empty") for c in LENGTH_FIELDS]
    words = kept.select(*(_words(c) for c in LENGTH_FIELDS), *empty).collect(engine="streaming")
    if not words.height:
        return {"stats": [], "histogram": []}
    stats = [
        {
            "field": c,
            "mean": words[c].mean(),
            "p50": words[c].quantile(0.5),
            "p90": words[c].quantile(0.9),
            "max": words[c].max(),
        }
        for c in LENGTH_FIELDS
    ]
    histogram = [{"words": "empty", **{c: int(words[f"{c} empty"].sum()) for c in LENGTH_FIELDS}}]
    low = 0
    for label, high in [*BUCKETS, (LAST_BUCKET, None)]:
        row: dict[str, Any] = {"words": label}
        for c in LENGTH_FIELDS:
            counted = words.filter(~pl.col(f"{c} empty"))[c]
            inside = counted > low if high is None else (counted > low) & (counted <= high)
            row[c] = int(inside.sum())
        histogram.append(row)
        low = high if high is not None else low
    return {"stats": stats, "histogram": histogram}


def _mix(kept: pl.LazyFrame, column: str) -> list[dict[str, Any]]:
    counts = kept.filter(pl.col(column).is_not_null()).group_by(column).agg(pl.len().alias("count"))
    return counts.sort(["count", column], descending=[True, False]).collect(engine="streaming").to_dicts()


def tokens(snapshot: Snapshot) -> dict[str, Any] | None:
    """The model tokens the runs recorded in the manifest (prompt and completion, every tag), and
    their sum per kept record; None where no run recorded any."""
    prompt = completion = 0
    for run in snapshot.manifest.runs.values():
        for counts in (run.state.get("tokens") or {}).values():
            if isinstance(counts, dict):
                prompt += int(counts.get("prompt", 0))
                completion += int(counts.get("completion", 0))
    if not prompt + completion:
        return None
    kept = snapshot.manifest.rows("kept")
    per = (prompt + completion) / kept if kept else None
    return {"prompt": prompt, "completion": completion, "per_kept": per}


def stored_reports(root: Path) -> list[dict[str, str]]:
    """The proxy evaluation and the judge calibration stored beside the manifest, as the dataset
    card words them (its Markdown, shown as text)."""
    out = []
    for title, file, body in (
        ("Proxy evaluation", EVALUATION_FILE, evaluation_lines),
        ("Judge calibration", CALIBRATION_FILE, calibration_lines),
    ):
        lines = stored_section(title, file, read_report(root / file), body)
        if lines:
            out.append({"title": title, "file": file, "text": "\n".join(lines[3:]).strip()})
    return out
