"""Pieces every generator flow shares."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from synth.engines import Engine
from synth.schemas import RunInfo
from synth.shards import DatasetWriter


def start_run(
    writer: DatasetWriter, rid: str, generator: str, config: BaseModel, engine: BaseModel, model: Engine
) -> None:
    """Register the run in the dataset, or reopen it to resume (see `DatasetWriter.start_run`)."""
    writer.start_run(
        RunInfo(
            run_id=rid,
            generator=generator,
            config=config.model_dump(),
            engine=engine.model_dump(),
            model=model.model_name,
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
