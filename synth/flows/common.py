"""Pieces every generator flow shares."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from synth.filters.base import FilterChain
from synth.filters.dedup import MinHashIndex
from synth.filters.redis_index import RedisMinHashIndex
from synth.schemas import Record, Reject, RunInfo, ShardInfo
from synth.shards import DatasetWriter


def commit_curated(
    writer: DatasetWriter,
    rid: str,
    batch: int,
    chain: FilterChain,
    index: MinHashIndex | RedisMinHashIndex | None,
    kept: Sequence[Record],
    rejects: Sequence[Reject],
    state: dict[str, Any] | None = None,
) -> list[ShardInfo]:
    """Run a batch's records through the curation chain, commit what survives with every reject,
    then bring the dataset's MinHash index up to date with the new shards."""
    curated = chain.apply(kept)
    shards = writer.commit_batch(rid, batch, curated.kept, [*rejects, *curated.rejects], state=state)
    if index is not None:
        index.sync(writer.path)
    return shards


class Progress:
    """A progress artifact on the current flow run (nothing outside one), updated as batches commit."""

    def __init__(self, description: str) -> None:
        from prefect.context import FlowRunContext

        self.artifact_id = None
        if FlowRunContext.get() is not None:
            from prefect.artifacts import create_progress_artifact

            self.artifact_id = create_progress_artifact(progress=0.0, description=description)

    def update(self, fraction: float) -> None:
        if self.artifact_id is not None:
            from prefect.artifacts import update_progress_artifact

            update_progress_artifact(self.artifact_id, progress=round(100 * min(1.0, fraction), 1))  # type: ignore[arg-type]


def start_run(
    writer: DatasetWriter, rid: str, generator: str, config: BaseModel, engine: BaseModel, model_name: str
) -> None:
    """Register the run in the dataset, or reopen it to resume (see `DatasetWriter.start_run`)."""
    writer.start_run(
        RunInfo(
            run_id=rid,
            generator=generator,
            config=config.model_dump(),
            engine=engine.model_dump(),
            model=model_name,
        )
    )


def run_summary(writer: DatasetWriter, rid: str, path: str | Path, reached_target: bool) -> dict[str, Any]:
    """What a finished run did, as the CLI prints it and a flow returns it."""
    run = writer.manifest.runs[rid]
    return {
        "run_id": rid,
        "generator": run.generator,
        "dataset": str(path),
        "kept": run.kept,
        "rejected": run.rejected,
        "batches": run.batches_done,
        "rejects_by_reason": run.rejects_by_reason,
        "reached_target": reached_target,
    }
