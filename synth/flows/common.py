"""Pieces every generator flow shares."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from synth.shards import DatasetWriter


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
