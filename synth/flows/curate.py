"""Curating whole datasets (in place) and files of records (into a dataset), with the chain of
`synth.flows.curation`. A file is curated as a run of its own (`CurateFileJob`), through the same
runner as a generator's batches: lock, resume, commits and summary."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import polars as pl

from synth.engines import Engine
from synth.filters.base import FilterChain
from synth.filters.decontamination import DecontaminationFilter
from synth.filters.dedup import MinHashIndex
from synth.filters.redis_index import RedisMinHashIndex
from synth.flows.common import Committed
from synth.flows.jobs import Batch, Maker, MergedState, RunContext, Spec
from synth.flows.run import run_job
from synth.schemas import DatasetConfig, Record, Reject, RunInfo, run_id
from synth.schemas.curation import CurationConfig
from synth.schemas.records import add_counts, flat_counts
from synth.schemas.runs import RunState, RunSummary
from synth.shards import DatasetError
from synth.shards.layout import MANIFEST, is_dataset
from synth.shards.read import kept_frames
from synth.shards.record_files import RecordsFile

CURATE = "curate"


def benchmark_hits(chain: FilterChain) -> dict[str, int]:
    """How many records hit each benchmark item, from the chain's decontamination filter."""
    hits: dict[str, int] = {}
    for f in chain.filters:
        if isinstance(f, DecontaminationFilter):
            hits.update(f.hits)
    return dict(sorted(hits.items(), key=lambda kv: (-kv[1], kv[0])))


def _rows_to_records(frame: pl.DataFrame) -> list[Record]:
    return [Record.model_validate(row) for row in frame.iter_rows(named=True)]


def _curate_run(config: CurationConfig, source: str) -> RunInfo:
    rid = run_id(CURATE, config.model_dump(), source)
    return RunInfo(run_id=rid, generator=CURATE, config=config.model_dump(), engine={}, model="")


class CurateFileSummary(RunSummary):
    """A curation run's summary: the records it read and each benchmark's hits (from the chain's
    decontamination filter)."""

    records_in: int
    benchmark_hits: dict[str, int]


class CurateInPlaceSummary(CurateFileSummary):
    """Curating in place: with what the pass dropped, per stage and reason."""

    counts: dict[str, dict[str, int]]


@dataclass
class CurateInPlaceJob(MergedState):
    """A dataset's kept records curated in place, a run of the `curate` kind with one batch that
    replaces the kept shards (`replaces`): the first of each duplicate group stays, everything
    dropped moves to the rejects with its stage and reason. The batch reads one shard at a time and
    writes as it goes, so memory holds `batch_size` records. A pass killed before its commit starts
    over: nothing of it is in the dataset."""

    config: CurationConfig
    batch_size: int
    run_id: str
    generator: ClassVar[str] = CURATE
    generator_run: ClassVar[bool] = False
    replaces: ClassVar[bool] = True
    records_in: int = 0
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)

    def open(self, run: RunContext) -> str:
        return f"Curating {run.dataset.path} in place"

    def plan(self, run: RunContext) -> Iterator[Spec]:
        # Each call is one pass over what the dataset keeps now (a later pass curates what was added
        # since), and a pass killed before its commit is made again.
        yield Spec(run.info.batches_done, (Path(run.dataset.path), list(run.writer.manifest.shards)))

    def make(self, maker: Maker, spec: Spec) -> Batch[Any]:
        raise NotImplementedError("a dataset curated in place is one replacement (see `replacement`)")

    def replacement(self, chain: FilterChain, spec: Spec) -> Iterator[tuple[list[Record], list[Reject]]]:
        root, shards = spec.data
        for frame in kept_frames(root, shards=shards):
            for part in frame.iter_slices(self.batch_size):
                records = _rows_to_records(part)
                self.records_in += len(records)
                result = chain.apply(records)
                add_counts(self.counts, flat_counts(result.counts))
                kept_ids = {r.id for r in result.kept}
                self.dropped.extend(r.id for r in records if r.id not in kept_ids)
                yield result.kept, result.rejects

    def committed(self, run: RunContext, spec: Spec, batch: Batch[Any], result: Committed) -> str:
        return "kept records replaced"

    def progress(self, run: RunContext) -> float:
        return float(run.info.batches_done)

    def finish(self, run: RunContext, summary: RunSummary) -> CurateInPlaceSummary:
        # The dataset's own indexes must forget what left it.
        minhash = self.config.minhash
        if minhash.enabled and minhash.backend == "local":
            MinHashIndex.open(run.dataset.path, minhash, rebuild=True)
        elif minhash.enabled and self.dropped:
            index = RedisMinHashIndex.open(run.dataset.path, minhash)
            with index.locked():
                index.remove(self.dropped)
        hits = benchmark_hits(run.chain) if run.chain is not None else {}
        return {**summary, "records_in": self.records_in, "counts": self.counts, "benchmark_hits": hits}


def curate_dataset(
    path: str | Path,
    config: CurationConfig,
    engine: Engine | None = None,
    batch_size: int = 10_000,
    wait: float | None = 0,
) -> CurateInPlaceSummary:
    """Apply the chain to a dataset's kept records in place (`CurateInPlaceJob`), through the same
    runner as a generator's batches. Holds the dataset's writer lock from before the first read to
    the last write, so records a generator commits meanwhile are never lost (a second writer waits
    `wait` seconds, or fails naming the holder); `engine` is the judge's, when the config has one."""
    root = Path(path)
    if not is_dataset(root):
        raise DatasetError(f"{root}: no {MANIFEST}; not a dataset directory")
    job = CurateInPlaceJob(config, batch_size, _curate_run(config, f"in-place:{root.resolve()}").run_id)
    dataset = DatasetConfig(path=str(root), wait=wait)
    return run_job(job, None, dataset, curation=config, model=engine, batch_retries=0)


@dataclass
class CurateFileJob(MergedState):
    """Records read from a file, curated into a dataset one batch at a time (deduplicated against
    what the dataset holds): a run of the `curate` kind, which resumes at its first uncommitted
    batch like a generator's. Each batch is read from the file when it is made, so memory holds one."""

    config: CurationConfig
    source: RecordsFile
    run_id: str
    generator: ClassVar[str] = CURATE
    generator_run: ClassVar[bool] = False  # its chain is not a generator's (see `chain_settings`)

    def open(self, run: RunContext) -> str:
        return f"Curating {self.source.count} records into {run.dataset.path}"

    def plan(self, run: RunContext) -> Iterator[Spec]:
        for batch in range(run.info.batches_done, self.source.batches):
            yield Spec(batch, batch * self.source.batch_size)

    def make(self, maker: Maker, spec: Spec) -> Batch[RunState]:
        return Batch(self.source.batch(spec.batch), [], {})

    def committed(self, run: RunContext, spec: Spec, batch: Batch[RunState], result: Committed) -> str:
        return f"records {spec.data} to {spec.data + len(batch.kept) - 1}"

    def progress(self, run: RunContext) -> float:
        return run.info.batches_done / max(1, self.source.batches)

    def finish(self, run: RunContext, summary: RunSummary) -> CurateFileSummary:
        hits = benchmark_hits(run.chain) if run.chain is not None else {}
        return {**summary, "records_in": self.source.count, "benchmark_hits": hits}


def curate_file(
    file: str | Path | RecordsFile,
    out: str | Path,
    config: CurationConfig,
    engine: Engine | None = None,
    batch_size: int = 10_000,
    wait: float | None = 0,
    rebuild_index: bool = False,
) -> CurateFileSummary:
    """Curate records from a file into a dataset, deduplicated against what the dataset holds
    (its MinHash index rebuilt from the shards first with `rebuild_index`); `engine` is the
    judge's, when the config has one. The whole file is checked before anything is written."""
    source = file if isinstance(file, RecordsFile) else RecordsFile.open(file, batch_size)
    rid = _curate_run(config, f"file:{source.path.resolve()}").run_id
    job = CurateFileJob(config, source, rid)
    dataset = DatasetConfig(path=str(out), wait=wait)
    return run_job(job, None, dataset, curation=config, model=engine, rebuild_index=rebuild_index, batch_retries=0)
