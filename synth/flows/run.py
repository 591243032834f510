"""One run of a generator into a dataset: the skeleton every generator flow shares.

`run_job` owns what is the same for every generator: the dataset's writer and its lock, the
engine's life, the run's record in the manifest (start, resume, finish), the curation chain, the
batch loop with its Prefect task, retries and commits, progress, and the summary. A generator
supplies a `Job`: how to plan its batches from the committed state, how to make one batch, and
what to do once one is committed. Nothing of a batch changes the run until it commits (see
`commit_curated`), so a retried or resumed batch starts from the committed state.

A job whose batches do not depend on one another (`independent`: making batch n+1 reads nothing
that committing batch n changes) is pipelined: once batch n is made, batch n+1 is made in a
background thread while batch n is curated and committed, so the engine does not wait for the
curation. The calls to make batches happen in the same order as without it and each batch is
the same, so a run, resumed or not, writes exactly what it writes unpipelined. The summary says
how much of the run the engine was busy.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar, Generic, Protocol, TypedDict, TypeVar, Unpack

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
    # Instead of `state`: the state to commit as a function of the committed one (a batch made
    # ahead of its turn cannot read the state the batch before it commits).
    merge: Callable[[dict[str, Any]], dict[str, Any]] | None = None


@dataclass
class RunContext:
    """An open run: its dataset writer (holding the lock), its id, the live engine and the chain."""

    writer: DatasetWriter
    run_id: str
    dataset: DatasetConfig
    engine: Engine
    chain: FilterChain
    index: Index | None
    # Pipelining (see the module's notes): batches made ahead, by number, and the hook that,
    # once a batch is made, starts making the next one.
    ahead: dict[int, Future[Batch]] = field(default_factory=dict)
    made_hook: Callable[[], None] | None = None

    @property
    def info(self) -> RunInfo:
        """The run's committed record in the manifest."""
        return self.writer.manifest.runs[self.run_id]

    def make(self, job: Job, spec: Spec) -> Batch:
        """Batch `spec`: the one made ahead if there is one and it succeeded, else made now. Then
        the next batch starts being made (pipelined runs)."""
        future = self.ahead.pop(spec.batch, None)
        batch = None
        if future is not None:
            try:
                batch = future.result()
            except Exception as e:  # made again here, under the batch task's retries
                _logger().warning("batch %d: making it ahead failed (%s); making it again", spec.batch, e)
        if batch is None:
            batch = job.make(self, spec)
        if self.made_hook is not None:
            self.made_hook()
        return batch


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
    counts the source items. Subclasses build the generator (`open`) and make a chunk (`make`),
    which reads nothing of the committed state (so the run is pipelined; state to commit goes in
    `Batch.merge`). A job whose chunks have counts of their own makes its batches with `counted`:
    the counts add up (`add_counts`) in the run's state and its summary under `counts_key`."""

    config: Any  # a config with a `chunk_size`
    items: list[Any]
    run_id: str
    independent: ClassVar[bool] = True
    counts_key: ClassVar[str | None] = None  # where the chunks' counts add up, in the run's state and summary

    @staticmethod
    def add_counts(total: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
        """The run's counts so far with one chunk's added."""
        raise NotImplementedError

    def counted(self, made: Outcome, counts: dict[str, Any]) -> Batch:
        """The batch of a chunk the generator `made`, whose `counts` add to the run's when it commits."""
        key = self.counts_key
        assert key is not None, "counts_key first"
        return Batch(made.kept, made.rejects, merge=lambda state: {key: self.add_counts(state.get(key, {}), counts)})

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
        if self.counts_key is not None:
            summary[self.counts_key] = run.info.state.get(self.counts_key, {})


# A run without a budget of its own (`max_batches` unset) ends early only when this many batches
# in a row keep no record. Ten: a healthy run rarely keeps nothing in one batch (Self-Instruct's
# default 16 prompts ask for over a hundred tasks; Magpie's 64 conversations), so ten in a row say
# that the model, the prompts or the curation reject everything, or that the pool is exhausted,
# while a few empty batches from a flaky server or a run of tiny batches do not end the run; and
# ten wasted batches cost minutes, not hours.
STALL_BATCHES = 10


@dataclass
class TargetJob(Built[G]):
    """A job that makes batches until the config's `num_records` are kept; its progress is the
    share of the target kept. It stops before the target only on a budget the user set
    (`max_batches`) or on a stall (`STALL_BATCHES` batches in a row that kept nothing), and says
    which in `stopped` (also the summary's `stopped`, and a warning in the run's log). Subclasses
    build the generator (`open`), size the next batch from the committed run (`size`) and make
    it (`make`)."""

    config: Any  # a config with `num_records` and `max_batches` (None: no budget)
    stopped: str = field(default="", init=False)

    def plan(self, run: RunContext) -> Iterator[Spec]:
        # Counted over this session's batches: a resumed run that had stalled tries again. The
        # loop asks for the next batch only once the one before has committed (these jobs are
        # not pipelined), so the kept count read here includes it.
        empty = 0
        while not (why := self._stop(run.info, empty)):
            before = run.info.kept
            yield Spec(run.info.batches_done, self.size(run.info))
            empty = empty + 1 if run.info.kept == before else 0
        self.stopped = why
        if why != "target":
            _logger().warning("run stopped before its target: %s", self.stop_line(run.info))

    def _stop(self, info: RunInfo, empty: int) -> str:
        if info.kept >= self.config.num_records:
            return "target"
        budget = self.config.max_batches
        if budget is not None and info.batches_done >= budget:
            return "budget"
        if empty >= STALL_BATCHES:
            return "stalled"
        return ""

    def stop_line(self, info: RunInfo) -> str:
        """Why the run ended, in words."""
        kept = f"{info.kept} of {self.config.num_records} records kept"
        if self.stopped == "budget":
            return f"the batch budget the config sets (max_batches {self.config.max_batches}) is spent; {kept}"
        if self.stopped == "stalled":
            return f"stalled: the last {STALL_BATCHES} batches kept no record; {kept}"
        return f"target reached: {kept}"

    def size(self, info: RunInfo) -> int:
        """The next batch's size (what its `Spec.data` holds), from the committed run."""
        raise NotImplementedError

    def run_total(self, run: RunContext) -> str:
        """What a batch's log line says of the run as a whole."""
        return f"run total {run.info.kept}/{self.config.num_records} kept"

    def progress(self, run: RunContext) -> float:
        return run.info.kept / self.config.num_records

    def finish(self, run: RunContext, summary: dict[str, Any]) -> None:
        summary["reached_target"] = run.info.kept >= self.config.num_records
        summary["stopped"] = self.stop_line(run.info)


class OneBatchJob:
    """A run of one batch, planned until it is committed (data written as it is, such as a
    method's seed data); the subclass's `make` commits state holding `done: True`."""

    def plan(self, run: RunContext) -> Iterator[Spec]:
        if not run.info.state.get("done"):
            yield Spec(run.info.batches_done)

    def progress(self, run: RunContext) -> float:
        return 1.0 if run.info.state.get("done") else 0.0

    def finish(self, run: RunContext, summary: dict[str, Any]) -> None:
        pass


class Job(Protocol):
    """A generator's part of a run. A job may also say `independent = True` (a class attribute):
    making batch n+1 reads nothing that committing batch n changes, so the run is pipelined."""

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
    batch = run.make(job, spec)
    meter = run.engine if isinstance(run.engine, Metered) else None
    state = batch.merge(run.info.state) if batch.merge is not None else batch.state
    result = commit_curated(
        run.writer, run.run_id, spec.batch, run.chain, run.index, batch.kept, batch.rejects, state, meter
    )
    note = job.committed(run, spec, batch, result)
    get_run_logger().info("batch %d: %s; %d kept, %d rejected", spec.batch, note, result.kept, result.rejected)
    return result.paths


class RunOptions(TypedDict, total=False):
    """What every generator's run takes besides its config, engine config and dataset.

    - `curation`: the chain each batch passes before it is written (default: exact and near dedup,
      plus the heuristics in profiles other than `paper`).
    - `model`: a live engine to use instead of the one built from the engine config (tests pass a
      scripted one; the engine config still names the model in the run id).
    - `batch_retries`: how often a batch whose engine calls fail is retried, with backoff (default
      2); a batch changes nothing until it commits, so a retry starts clean.
    - `pipeline`: make the next batch while this one is curated and committed, for jobs whose
      batches are independent (default True; the records written are the same either way).
    """

    curation: CurationConfig | None
    model: Engine | None
    batch_retries: int
    pipeline: bool


def run_job(job: Job, engine: EngineConfig, dataset: DatasetConfig, **options: Unpack[RunOptions]) -> dict[str, Any]:
    """Run (or resume) `job` into `dataset`; returns the run's summary."""
    curation, model = options.get("curation"), options.get("model")
    step = run_batch.with_options(name=f"{job.generator}-batch", retries=options.get("batch_retries", 2))
    with DatasetWriter(dataset.path, shard_rows=dataset.shard_rows, wait=dataset.wait, holder=job.run_id) as writer:
        live = Metered(model or get_engine(engine))  # counts the tokens each batch uses
        start_run(writer, job.run_id, job.generator, job.config, engine, live.model_name, curation)
        language = getattr(job.config, "language", "en")
        profile = getattr(job.config, "profile", "paper")
        chain, index = build_chain(
            curation or CurationConfig(), dataset.path, engine=live, language=language, profile=profile
        )
        run = RunContext(writer, job.run_id, dataset, live, chain, index)
        progress = Progress(job.open(run))
        pace = Pace(job.progress(run), run.info.state.get("tokens", {}))
        pipelined = options.get("pipeline", True) and getattr(job, "independent", False)
        plan = _Plan(job.plan(run))
        started, made = time.perf_counter(), 0
        with ThreadPoolExecutor(1, thread_name_prefix="make-ahead") as ahead:
            if pipelined:
                run.made_hook = _making_ahead(job, run, plan, ahead)
            try:
                for spec in plan:
                    progress.update(job.progress(run))
                    step(job, run, spec)
                    made += 1
                    _logger().info("progress: %s", pace.line(job.progress(run), run.info.state.get("tokens", {})))
                    tell_watchers(pace.progress(run.info, job.progress(run)))
            finally:  # after a failure, a batch made ahead and not started yet is not started (one
                # already being made is waited for when the pool closes: the engine closes after it)
                for future in run.ahead.values():
                    future.cancel()
        progress.update(job.progress(run))
        writer.finish_run(job.run_id)
        summary = run_summary(writer, job.run_id, dataset.path, reached_target=True)
        summary["engine"] = engine_use(live.busy_seconds, time.perf_counter() - started, made, pipelined)
        job.finish(run, summary)
        return summary


class _Plan:
    """A job's planned batches, shared by the batch loop and the hook that makes the next one ahead."""

    def __init__(self, specs: Iterator[Spec]) -> None:
        self._specs = specs
        self._next: Spec | None = None  # planned by `peek`, not yet taken by the loop

    def __iter__(self) -> _Plan:
        return self

    def __next__(self) -> Spec:
        spec, self._next = self._next, None
        return spec if spec is not None else next(self._specs)

    def peek(self) -> Spec | None:
        """The next batch the loop will get, planned now if it was not yet; None at the end."""
        if self._next is None:
            self._next = next(self._specs, None)
        return self._next


def _making_ahead(job: Job, run: RunContext, plan: _Plan, ahead: ThreadPoolExecutor) -> Callable[[], None]:
    """The hook that, once a batch is made, starts making the next one (its tokens counted for it)."""
    engine = run.engine

    def make(spec: Spec) -> Batch:
        if isinstance(engine, Metered):
            with engine.counting_for(spec.batch):
                return job.make(run, spec)
        return job.make(run, spec)

    def make_next() -> None:
        spec = plan.peek()
        if spec is not None and spec.batch not in run.ahead:  # a batch made again on a retry: already on its way
            run.ahead[spec.batch] = ahead.submit(make, spec)

    return make_next


def engine_use(busy: float, wall: float, batches: int, pipelined: bool) -> dict[str, Any]:
    """How much of this session's batch loop the engine spent serving calls, and its idle time
    per batch (what pipelining and a faster curation win back)."""
    return {
        "busy_seconds": round(busy, 6),
        "wall_seconds": round(wall, 3),
        "busy_share": round(busy / wall, 6) if wall > 0 else 0.0,
        "idle_seconds_per_batch": round(max(0.0, wall - busy) / batches, 3) if batches else 0.0,
        "pipelined": pipelined,
    }


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
