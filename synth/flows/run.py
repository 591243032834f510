"""One run of a generator into a dataset: the skeleton every generator flow shares.

`run_job` owns what is the same for every generator: the dataset's writer and its lock, the
engine's life, the run's record in the manifest (start, resume, finish), the curation chain, the
batch loop with its Prefect task, retries and commits, progress, and the summary. A generator
supplies a `Job`: how to plan its batches from the committed state, how to make one batch, and
what to do once one is committed. Nothing of a batch changes the run until it commits (see
`commit_curated`), so a retried or resumed batch starts from the committed state.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Generic, Protocol, TypedDict, TypeVar, Unpack

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE
from pydantic import BaseModel

from synth.engines import Engine, get_engine
from synth.engines.base import Metered
from synth.filters.base import FilterChain
from synth.filters.minhash import Index
from synth.flows.common import (
    Committed,
    Pace,
    Progress,
    commit_curated,
    run_summary,
    start_run,
    tell_watchers,
    worth_retrying,
)
from synth.flows.curation import build_chain
from synth.schemas import DatasetConfig, EngineConfig, Outcome, RunInfo, VLLMEngineConfig
from synth.schemas.curation import CurationConfig
from synth.shards import DatasetWriter


@dataclass
class Spec:
    """One planned batch: its number in the run and what the generator needs to make it."""

    batch: int
    data: Any = None


@dataclass
class Batch(Outcome):
    """What a generator made for one batch, before curation, and the run state to commit with it."""

    state: dict[str, Any] | None = None
    extra: Any = None  # what the generator wants back in `committed` (e.g. the tasks to add to its pool)


@dataclass
class RunContext:
    """An open run: its dataset writer (holding the lock), its id, the live engine and the chain."""

    writer: DatasetWriter
    run_id: str
    dataset: DatasetConfig
    engine: Engine
    chain: FilterChain
    index: Index | None

    @property
    def info(self) -> RunInfo:
        """The run's committed record in the manifest."""
        return self.writer.manifest.runs[self.run_id]


G = TypeVar("G")


@dataclass
class Built(Generic[G]):
    """A job's live generator, built by its `open` (a job is made before the engine exists)."""

    _gen: G | None = field(default=None, init=False, repr=False)

    @property
    def gen(self) -> G:
        assert self._gen is not None, "open() first"
        return self._gen


@dataclass
class ChunkedJob(Built[G]):
    """A job over a fixed list of source items, one batch per chunk of the config's `chunk_size`:
    batch n is chunk n, so a resumed run goes on at the first chunk not committed. Its summary
    counts the source items. Subclasses build the generator (`open`) and make a chunk (`make`)."""

    config: Any  # a config with a `chunk_size`
    items: list[Any]
    run_id: str

    @cached_property
    def chunks(self) -> list[list[Any]]:
        size = self.config.chunk_size
        return [self.items[i : i + size] for i in range(0, len(self.items), size)]

    def plan(self, run: RunContext) -> Iterator[Spec]:
        for chunk in range(run.info.batches_done, len(self.chunks)):
            yield Spec(chunk, self.chunks[chunk])

    def progress(self, run: RunContext) -> float:
        return run.info.batches_done / max(1, len(self.chunks))

    def finish(self, run: RunContext, summary: dict[str, Any]) -> None:
        summary["source_instructions"] = len(self.items)


class Job(Protocol):
    """A generator's part of a run."""

    @property
    def generator(self) -> str:
        """The generator's name, as records and the manifest carry it."""
        ...

    @property
    def run_id(self) -> str: ...

    @property
    def config(self) -> BaseModel: ...

    def open(self, run: RunContext) -> str:
        """Prepare to run (build the generator, refill its pool from the committed records);
        returns the progress artifact's description."""
        ...

    def plan(self, run: RunContext) -> Iterator[Spec]:
        """The batches still to make, lazily: each is planned after the one before is committed."""
        ...

    def make(self, run: RunContext, spec: Spec) -> Batch: ...

    def committed(self, run: RunContext, spec: Spec, batch: Batch, result: Committed) -> str:
        """Called once the batch is in the dataset; returns what the log line says of it."""
        ...

    def progress(self, run: RunContext) -> float: ...

    def finish(self, run: RunContext, summary: dict[str, Any]) -> None:
        """Add the generator's own figures to the run's summary."""
        ...


@task(name="batch", cache_policy=NONE, retries=2, retry_delay_seconds=[5, 30], retry_condition_fn=worth_retrying)
def run_batch(job: Job, run: RunContext, spec: Spec) -> list[str]:
    """Make one batch, curate it and commit it; returns the paths of the shards written."""
    batch = job.make(run, spec)
    meter = run.engine if isinstance(run.engine, Metered) else None
    result = commit_curated(
        run.writer, run.run_id, spec.batch, run.chain, run.index, batch.kept, batch.rejects, batch.state, meter
    )
    note = job.committed(run, spec, batch, result)
    get_run_logger().info("batch %d: %s; %d kept, %d rejected", spec.batch, note, result.kept, result.rejected)
    return result.paths


class RunOptions(TypedDict, total=False):
    """What every generator's run takes besides its config, engine config and dataset.

    - `curation`: the chain each batch passes before it is written (default: heuristics, exact and
      near dedup).
    - `model`: a live engine to use instead of the one built from the engine config (tests pass a
      scripted one; the engine config still names the model in the run id).
    - `batch_retries`: how often a batch whose engine calls fail is retried, with backoff (default
      2); a batch changes nothing until it commits, so a retry starts clean.
    """

    curation: CurationConfig | None
    model: Engine | None
    batch_retries: int


def run_job(job: Job, engine: EngineConfig, dataset: DatasetConfig, **options: Unpack[RunOptions]) -> dict[str, Any]:
    """Run (or resume) `job` into `dataset`; returns the run's summary."""
    curation, model = options.get("curation"), options.get("model")
    step = run_batch.with_options(name=f"{job.generator}-batch", retries=options.get("batch_retries", 2))
    with DatasetWriter(dataset.path, shard_rows=dataset.shard_rows, wait=dataset.wait, holder=job.run_id) as writer:
        live = Metered(model or get_engine(engine))  # counts the tokens each batch uses
        start_run(writer, job.run_id, job.generator, job.config, engine, live.model_name, curation)
        language = getattr(job.config, "language", "en")
        chain, index = build_chain(curation or CurationConfig(), dataset.path, engine=live, language=language)
        run = RunContext(writer, job.run_id, dataset, live, chain, index)
        progress = Progress(job.open(run))
        pace = Pace(job.progress(run), run.info.state.get("tokens", {}))
        for spec in job.plan(run):
            progress.update(job.progress(run))
            step(job, run, spec)
            _logger().info("progress: %s", pace.line(job.progress(run), run.info.state.get("tokens", {})))
            tell_watchers(pace.progress(run.info, job.progress(run)))
        progress.update(job.progress(run))
        writer.finish_run(job.run_id)
        summary = run_summary(writer, job.run_id, dataset.path, reached_target=True)
        job.finish(run, summary)
        return summary


def _logger() -> Any:
    """The flow run's logger inside a flow (its lines reach the Prefect UI), else this module's."""
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


def generator_flow(name: str, config_type: type[BaseModel], runner: Callable[..., dict[str, Any]], title: str) -> Any:
    """The Prefect flow of a generator whose run takes only the common options: `name` as Prefect
    shows it, `runner(config, engine, dataset, curation=...)` its run function. Its parameters are
    typed with `config_type`, so Prefect validates them as it would a hand-written flow's."""

    def run_generator(
        config: Any, dataset: DatasetConfig, engine: Any = None, curation: CurationConfig | None = None
    ) -> dict[str, Any]:
        return runner(config, engine or VLLMEngineConfig(), dataset, curation=curation)

    run_generator.__annotations__ = {
        "config": config_type,
        "dataset": DatasetConfig,
        "engine": EngineConfig | None,
        "curation": CurationConfig | None,
        "return": dict[str, Any],
    }
    run_generator.__name__ = run_generator.__qualname__ = f"{name.replace('-', '_')}_flow"
    run_generator.__doc__ = (
        f"{title} into a dataset directory, on the configured engine (the embedded model by default)."
    )
    return flow(name=name, log_prints=True)(run_generator)
