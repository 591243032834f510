"""The manifest: the one file that says which shards make up a dataset and how each run went."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from synth.schemas.records import ReasonCounts, add_counts, flat_counts

SCHEMA_VERSION = 1
BLOCKS_LAYOUT = 2  # the layout this writer gives its shards (`ShardInfo.layout`)


def _now() -> datetime:
    return datetime.now(UTC)


class ShardInfo(BaseModel):
    """One Parquet file of the dataset, relative to the dataset directory."""

    path: str
    kind: Literal["kept", "rejects"]
    rows: int
    bytes: int
    sha256: str
    run_id: str
    batch: int
    recovered: bool = Field(default=False, description="Listed again by `synth verify --repair` from the file itself.")
    layout: int = Field(
        default=1,
        description="Its columns' layout: 2, generators' own fields in their blocks; 1 (shards listed "
        "before this field), perhaps flat columns a reader gathers into blocks, as the file's footer says.",
    )


class QuarantineEntry(BaseModel):
    """A file `synth verify --repair` moved out of the dataset into `quarantine/` (never deleted)."""

    path: str
    moved_to: str
    reason: str
    at: datetime = Field(default_factory=_now)


class RunInfo(BaseModel):
    """One run that wrote into the dataset: its full config and its progress.

    `batches_done` is the resume point: batches below it are committed (their shards are listed),
    anything above was never recorded and is generated again.
    """

    run_id: str
    generator: str
    config: dict[str, Any]
    engine: dict[str, Any]
    curation: dict[str, Any] = Field(default_factory=dict, description="The curation chain's config the run applied.")
    model: str = ""
    status: Literal["running", "finished"] = "running"
    started_at: datetime = Field(default_factory=_now)
    updated_at: datetime = Field(default_factory=_now)
    batches_done: int = 0
    kept: int = 0
    rejected: int = 0
    rejects_by_reason: dict[str, dict[str, int]] = Field(default_factory=dict)
    state: dict[str, Any] = Field(default_factory=dict, description="Generator state needed to resume (small, JSON).")


class Manifest(BaseModel):
    """Top-level description of a dataset directory."""

    schema_version: int = SCHEMA_VERSION
    dataset_id: str = Field(
        default="", description="Made once when the dataset is created; names its shared indexes (e.g. in Redis)."
    )
    created_at: datetime = Field(default_factory=_now)
    updated_at: datetime = Field(default_factory=_now)
    shards: list[ShardInfo] = Field(default_factory=list)
    runs: dict[str, RunInfo] = Field(default_factory=dict)
    retired: list[ShardInfo] = Field(
        default_factory=list, description="Shards a commit replaced, removed by the writer right after it."
    )
    quarantined: list[QuarantineEntry] = Field(
        default_factory=list, description="What `synth verify --repair` set aside, and why."
    )

    def rows(self, kind: Literal["kept", "rejects"]) -> int:
        return sum(s.rows for s in self.shards if s.kind == kind)

    def rejects_by_reason(self) -> dict[str, dict[str, int]]:
        """Reject counts per stage and reason, summed over runs."""
        out: ReasonCounts = {}
        for run in self.runs.values():
            add_counts(out, flat_counts(run.rejects_by_reason))
        return out
