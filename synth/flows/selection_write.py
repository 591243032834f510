"""A selection written as a dataset: the source's kept records in order, the selected ones kept
with their scores and selection fields, every other one a reject with its reason (a run of the
`select` kind, through the same runner as a generator's: lock, resume, commits and summary). The
run's config in the manifest records the selection's parameters and the scorers' keys and models;
its state holds the subset's figures (mean scores, diversity).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import polars as pl
from pydantic import BaseModel

from synth.filters.base import reject
from synth.flows.common import Committed
from synth.flows.jobs import Batch, Maker, MergedState, RunContext, Spec
from synth.flows.run import run_job
from synth.schemas import DatasetConfig, Record, Reject, run_id
from synth.schemas.curation import KEEP_ALL
from synth.schemas.runs import RunState, RunSummary
from synth.schemas.selection import SelectionConfig, SelectionSummary, SubsetFigures, SubsetInfo
from synth.selection.candidates import IFD_FLAG, SCORE_COLUMNS, Candidates, Choice
from synth.selection.selectors import diversity
from synth.shards.layout import read_manifest
from synth.shards.read import kept_frames

SELECT = "select"


def _mean(values: np.ndarray) -> float | None:
    values = values[~np.isnan(values)]
    return round(float(values.mean()), 4) if len(values) else None


def figures(candidates: Candidates, choice: Choice) -> SubsetFigures:
    """What a subset looks like: its size, mean scores and diversity (mean cosine distance to the
    nearest other selected record, where embeddings exist)."""
    at = choice.selection.indices
    div = diversity(candidates.embeddings[at]) if candidates.embeddings is not None and len(at) > 1 else float("nan")
    return {
        "method": choice.method,
        "selected": len(at),
        "candidates": candidates.items.height,
        "mean_deita_score": _mean(candidates.deita_score()[at]),
        "mean_complexity": _mean(candidates.column("complexity_score")[at]),
        "mean_quality": _mean(candidates.column("quality_score")[at]),
        "mean_ifd": _mean(candidates.column("ifd")[at]),
        "mean_response_tokens": _mean(candidates.column("response_tokens")[at]),
        "diversity": None if math.isnan(div) else round(div, 4),
    }


def _annotations(candidates: Candidates, choice: Choice) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Per record id: its scores (and flag), and for selected ones the selection fields."""
    columns = list(SCORE_COLUMNS.values())
    scores: dict[str, dict[str, Any]] = {}
    for row in candidates.scores.select("id", *columns).iter_rows(named=True):
        values = {c: row[c] for c in columns if row[c] is not None}
        if "response_tokens" in values:
            values["response_tokens"] = int(values["response_tokens"])
        scores[row["id"]] = values
    ids = candidates.items["id"]
    selected: dict[str, dict[str, Any]] = {}
    for rank, (index, distance) in enumerate(zip(choice.selection.indices, choice.selection.distances, strict=True)):
        selected[ids[int(index)]] = {
            "selection_method": choice.method,
            "selection_rank": rank,
            "selection_distance": None if math.isnan(distance) else float(distance),
        }
    return scores, selected


def _run(source: Path, config: SelectionConfig, method: str, candidates: Candidates) -> tuple[SelectionRun, str]:
    manifest = read_manifest(source)
    ids = hashlib.sha256("\x1f".join(candidates.items["id"].to_list()).encode()).hexdigest()[:16]
    setup = {
        "selection": {**config.model_copy(update={"method": method}).identity()},
        "source": str(source),
        "source_dataset": manifest.dataset_id,
        "source_records": ids,
        "scorers": candidates.scorers,
    }
    return SelectionRun(**setup), run_id(SELECT, setup)


class SelectionState(RunState, total=False):
    selection: SubsetInfo


@dataclass
class SelectionJob(MergedState):
    """A method's choice written as a dataset: the source's kept records in order, one batch per
    `batch_size`, the selected ones kept and every other one a reject (a run of the `select`
    kind, through the same runner as a generator's: lock, resume, commits and summary)."""

    config: SelectionRun
    run_id: str
    source: Path
    scores: dict[str, dict[str, Any]]
    selected: dict[str, dict[str, Any]]
    choice: Choice
    figures: SubsetInfo
    batch_size: int
    generator: ClassVar[str] = SELECT
    generator_run: ClassVar[bool] = False
    made: int = 0  # batches written by this session
    seen: set[str] = field(default_factory=set)  # ids met so far: a repeated one is a duplicate

    def open(self, run: RunContext) -> str:
        return f"Selection by {self.choice.method} into {run.dataset.path}"

    def plan(self, run: RunContext) -> Iterator[Spec]:
        batch, done = 0, run.info.batches_done
        for frame in kept_frames(self.source):
            for part in frame.iter_slices(self.batch_size):
                if batch < done:  # committed by an earlier session: its ids were seen
                    self.seen.update(part["id"].to_list())
                else:
                    yield Spec(batch, part)
                batch += 1

    def make(self, maker: Maker, spec: Spec) -> Batch[SelectionState]:
        kept, rejects = _split(spec.data, self.scores, self.selected, self.choice, self.seen)
        return Batch(kept, rejects, {"selection": self.figures})

    def committed(self, run: RunContext, spec: Spec, batch: Batch[SelectionState], result: Committed) -> str:
        self.made += 1
        return f"{spec.data.height} source records"

    def progress(self, run: RunContext) -> float:
        return 1.0 if run.info.status == "finished" else 0.0

    def finish(self, run: RunContext, summary: RunSummary) -> RunSummary:
        return summary


class SelectionRun(BaseModel):
    """What defines a selection's run (its id hashes it): the selection settings, the source
    dataset and its records, and the scorers."""

    selection: dict[str, Any]
    source: str
    source_dataset: str
    source_records: str
    scorers: dict[str, Any]


def write_selection(
    source: str | Path,
    out: str | Path,
    candidates: Candidates,
    choice: Choice,
    config: SelectionConfig,
    *,
    batch_size: int = 10_000,
    wait: float | None = 0,
) -> SelectionSummary:
    """Write `choice` as the dataset `out`: the selected records kept, every other record of
    `source` a reject. One committed batch per `batch_size` source records, so a killed run
    resumes after its last committed batch; a finished run with the same inputs is not written
    again."""
    root = Path(source)
    setup, rid = _run(root, config, choice.method, candidates)
    scores, selected = _annotations(candidates, choice)
    subset: SubsetInfo = {**figures(candidates, choice), "dataset": str(out), "run_id": rid}
    job = SelectionJob(setup, rid, root, scores, selected, choice, subset, batch_size)
    written = run_job(job, None, DatasetConfig(path=str(out), wait=wait), curation=KEEP_ALL, batch_retries=0)
    return {
        **subset,
        "kept": written["kept"],
        "rejected": written["rejected"],
        "rejects_by_reason": written["rejects_by_reason"],
        "up_to_date": job.made == 0,
    }


def _split(
    part: pl.DataFrame,
    scores: dict[str, dict[str, Any]],
    selected: dict[str, dict[str, Any]],
    choice: Choice,
    seen: set[str],
) -> tuple[list[Record], list[Reject]]:
    kept: list[Record] = []
    rejects: list[Reject] = []
    for row in part.iter_rows(named=True):
        record = Record.model_validate(row)
        values = dict(scores.get(record.id, {}))
        if values.get("ifd") is not None and values["ifd"] >= 1.0 and IFD_FLAG not in record.tags:
            values["tags"] = [*record.tags, IFD_FLAG]
        if record.id in seen:
            rejects.append(
                reject(record, "selection", "duplicate record", "the same content appears earlier", **values)
            )
            continue
        seen.add(record.id)
        if record.id in selected:
            kept.append(record.model_copy(update={**values, **selected[record.id]}))
        elif (failure := choice.failed.get(record.id)) is not None:
            rejects.append(reject(record, "score", failure.reason, failure.detail, raw=failure.raw, **values))
        else:
            reason, detail = choice.left_out.get(record.id, ("outside the budget", ""))
            rejects.append(reject(record, "selection", reason, detail, selection_method=choice.method, **values))
    return kept, rejects
