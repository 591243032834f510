"""The local runner: a job's batches made on the flow's own process, each curated and committed
before the next is planned.

Runs are pipelined: once batch n is made, batch n+1 is made in a background thread while batch n
is curated and committed, so the engine does not wait for the curation.
- A job whose batches do not depend on one another (`independent`: making batch n+1 reads nothing
  that committing batch n changes) makes the next planned batch ahead.
- A job whose next batch is planned from the committed run can say what that plan will be once
  batch n commits as it was made (`speculate`). The batch made ahead on that guess is used only if
  the batch the run then plans is the same spec; otherwise (curation changed what the plan reads,
  a retry made batch n differently) it is dropped and made again.
Each batch is made from its spec alone, so a run, resumed or not, writes exactly what it writes
unpipelined.

A job that says `replaces = True` (curating a dataset in place) has one batch, which swaps the
dataset's kept records for what its `replacement(chain, spec)` yields, curated against itself.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from prefect import task
from prefect.cache_policies import NONE

from synth.engines import ChatRequest, Completion, Engine, get_engine
from synth.engines.base import EngineError, Metered
from synth.filters.base import FilterChain
from synth.filters.minhash import Index
from synth.flows.bookkeeping import Tracker, after_commit, engine_use, finished
from synth.flows.common import commit_curated, run_logger, start_run, worth_retrying
from synth.flows.curation import build_chain
from synth.flows.jobs import Batch, Job, Maker, Replacing, Retries, RunContext, Spec, chain_settings
from synth.schemas import DatasetConfig, EngineConfig
from synth.schemas.curation import CurationConfig
from synth.schemas.runs import RunSummary
from synth.shards import DatasetWriter

R = TypeVar("R", bound=RunSummary)


@dataclass(eq=False)
class Local:
    """The local runner's live parts: the maker (engine and rules), the chain and index that curate
    each batch before it commits, and the batches being made ahead of their turn."""

    maker: Maker
    chain: FilterChain
    index: Index | None
    ahead: dict[int, tuple[Spec, Future[Batch[Any]]]] = field(default_factory=dict)
    made_hook: Callable[[Spec, Batch[Any]], None] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)  # `ahead`, from the loop and a making thread

    def make(self, job: Job[Any], spec: Spec) -> Batch[Any]:
        """Batch `spec`: the one made ahead if there is one for this very spec and it succeeded,
        else made now (once nothing is being made ahead: the job's generator serves one batch at a
        time). Then the next batch starts being made (pipelined runs)."""
        with self.lock:
            entry = self.ahead.pop(spec.batch, None)
        batch = None
        if entry is not None:
            planned, future = entry
            try:
                made = future.result()
            except Exception as e:  # made again here, under the batch task's retries
                run_logger().warning("batch %d: making it ahead failed (%s); making it again", spec.batch, e)
            else:
                if planned == spec:
                    batch = made
                else:
                    run_logger().info("batch %d: planned otherwise than guessed; making it again", spec.batch)
        if batch is None:
            with self.lock:
                others = list(self.ahead.values())
            for _, other in others:
                with contextlib.suppress(Exception):
                    other.result()
            batch = job.make(self.maker, spec)
        if self.made_hook is not None:
            self.made_hook(spec, batch)
        return batch


@task(name="batch", cache_policy=NONE, retry_condition_fn=worth_retrying)
def run_batch(job: Job[Any], run: RunContext, local: Local, spec: Spec) -> list[str]:
    """Make one batch, curate it and commit it; returns the paths of the shards written."""
    batch = local.make(job, spec)
    meter = local.maker.engine if isinstance(local.maker.engine, Metered) else None
    state = job.fold(run.info.state, batch.delta)
    result = commit_curated(
        run.writer, run.run_id, spec.batch, local.chain, local.index, batch.kept, batch.rejects, state, meter
    )
    return after_commit(job, run, spec, batch, result)


class NoEngine:
    """The engine of a run that calls no model (curating a file without a judge, writing a
    selection): a call is a bug, said as such."""

    model_name = ""

    def chat(self, requests: Sequence[ChatRequest]) -> list[Completion]:
        raise EngineError("this run has no engine: give it an engine config or a live engine")

    def close(self) -> None:
        pass


def run_locally(
    job: Job[R],
    engine: EngineConfig | None,
    dataset: DatasetConfig,
    curation: CurationConfig | None,
    model: Engine | None,
    retries: Retries,
    pipeline: bool,
    rebuild_index: bool = False,
) -> R:
    """Run (or resume) `job` into `dataset` on this process; returns the run's summary. With
    neither an engine config nor a live engine the run calls no model; `rebuild_index` rebuilds
    the dataset's MinHash index from its shards first."""
    step = run_batch.with_options(name=f"{job.generator}-batch", **retries.task_options())
    with DatasetWriter(dataset.path, shard_rows=dataset.shard_rows, wait=dataset.wait, holder=job.run_id) as writer:
        given = model or (get_engine(engine) if engine is not None else None)
        live = Metered(given or NoEngine())  # counts the tokens each batch uses
        start_run(writer, job.run_id, job.generator, job.config, engine, live.model_name, curation)
        language, profile = chain_settings(job)
        replaces = getattr(job, "replaces", False)
        chain, index = build_chain(
            _against_itself(curation) if replaces else curation or CurationConfig(),
            None if replaces else dataset.path,
            engine=live if given is not None else None,
            rebuild_index=rebuild_index,
            language=language,
            profile=profile,
        )
        run = RunContext(writer, job.run_id, dataset, live.model_name, chain=chain)
        local = Local(Maker(live, chain.rules(), str(dataset.path)), chain, index)
        tracker = Tracker(job, run)
        pipelined = pipeline and (getattr(job, "independent", False) or hasattr(job, "speculate"))
        plan = _Plan(job.plan(run))
        started, made = time.perf_counter(), 0
        # Two threads: a batch that frees the engine before it is done (`engine_free`) has the next
        # one made beside it.
        with ThreadPoolExecutor(2, thread_name_prefix="make-ahead") as ahead:
            if pipelined:
                local.made_hook = _making_ahead(job, run, local, plan, ahead)
                if hasattr(job, "next_after_generation"):
                    local.maker.engine_free = _making_beside(job, run, local, ahead)
            try:
                for spec in plan:
                    tracker.show()
                    if replaces:
                        writer.replace_kept(job.run_id, cast(Replacing, job).replacement(chain, spec))
                    else:
                        step(job, run, local, spec)
                    made += 1
                    tracker.committed()
            finally:  # after a failure, a batch made ahead and not started yet is not started (one
                # already being made is waited for when the pool closes: the engine closes after it)
                local.maker.engine_free = None
                with local.lock:
                    for _, future in local.ahead.values():
                        future.cancel()
        tracker.show()
        use = engine_use(live.busy_seconds, time.perf_counter() - started, made, pipelined)
        return finished(job, run, use)


def _against_itself(curation: CurationConfig | None) -> CurationConfig:
    """The chain of a job that replaces the dataset's kept records (`replaces = True`, curating a
    dataset in place): those records are what is being curated, so its indexes start empty and live
    in this process (the run holds the lock: no other writer adds to the dataset meanwhile)."""
    local = (curation or CurationConfig()).model_copy(deep=True)
    local.minhash.backend = "local"
    return local


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


def _making_ahead(
    job: Job[Any], run: RunContext, local: Local, plan: _Plan, ahead: ThreadPoolExecutor
) -> Callable[[Spec, Batch[Any]], None]:
    """The hook that, once a batch is made, starts making the next one (its tokens counted for it):
    the next planned batch of an independent job, or the one a speculating job expects."""
    speculate = getattr(job, "speculate", None)

    def make_next(spec: Spec, batch: Batch[Any]) -> None:
        following = speculate(run, spec, batch) if speculate is not None else plan.peek()
        if following is not None:
            _submit(job, local, ahead, following)

    return make_next


def _making_beside(job: Job[Any], run: RunContext, local: Local, ahead: ThreadPoolExecutor) -> Callable[[Spec], None]:
    """The hook a batch calls once its model calls are done (`Maker.engine_free`): it starts making
    the batch the job expects next, beside the rest of this one."""

    def next_now(spec: Spec) -> None:
        following = job.next_after_generation(run, spec)  # type: ignore[attr-defined]
        if following is not None:
            _submit(job, local, ahead, following)

    return next_now


def _submit(job: Job[Any], local: Local, ahead: ThreadPoolExecutor, spec: Spec) -> None:
    """Start making `spec` in the background, unless it is on its way already (a batch made again on
    a retry, or started beside the one before it)."""
    with local.lock:
        if spec.batch not in local.ahead:
            local.ahead[spec.batch] = (spec, ahead.submit(_metered, job, local, spec))


def _metered(job: Job[Any], local: Local, spec: Spec) -> Batch[Any]:
    engine = local.maker.engine
    if isinstance(engine, Metered):
        with engine.counting_for(spec.batch):
            return job.make(local.maker, spec)
    return job.make(local.maker, spec)
