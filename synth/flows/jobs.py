"""A generator's part of a run, as runners see it: a `Job` plans batches from the committed run and
makes each one from a `Spec` with a `Maker` (the engine and the curation rules), never seeing the
dataset's writer. What a batch adds to the run's state travels with it as data (`Batch.delta`) and
is folded into the committed state by the runner that commits it (`Job.fold`), so a batch can be
made anywhere: in the flow's process, ahead of its turn in a background thread, or on a Ray worker.

Runners (`synth.flows.local` on this process, `synth.flows.scaleout` on Ray; `synth.flows.run`
picks one) own the rest: the lock, the run's start and finish in the manifest, curation, commits in
batch order, token metering, progress and the summary. The kinds of job generators build on
(chunked, towards a target, one batch) are in `synth.flows.job_kinds`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

from pydantic import BaseModel

from synth.engines import Engine, second_engine
from synth.filters.base import FilterChain
from synth.schemas import DatasetConfig, Outcome, Record, Reject, RunInfo
from synth.schemas.runs import RunState, RunSummary

if TYPE_CHECKING:
    from synth.flows.common import Committed
    from synth.shards import DatasetWriter


@dataclass
class Spec:
    """One planned batch: its number in the run and what the generator needs to make it (data a
    worker can be sent: it holds everything the batch reads of the committed run)."""

    batch: int
    data: Any = None


D = TypeVar("D")


@dataclass
class Batch(Outcome, Generic[D]):
    """What a generator made for one batch, before curation, and what it adds to the run's state
    (`delta`: JSON data of the job's own delta type; `Job.fold` adds it to the committed state when
    the batch commits)."""

    delta: D = field(default_factory=dict)  # type: ignore[assignment]


@dataclass(eq=False)
class Maker:
    """What a batch is made with, wherever it is made: the engine, the curation chain's rules (for
    jobs that screen records between their own steps) and the dataset's path."""

    engine: Engine
    rules: FilterChain
    dataset: str
    # Set by a runner that makes batches ahead: a job whose batch ends with work that calls no model
    # (running code, say) calls it with the batch's spec once its last model call is done, so the
    # next batch can use the engine meanwhile (see `Job.next_after_generation`).
    engine_free: Callable[[Spec], None] | None = None


@dataclass
class RunContext:
    """An open run, on the flow that commits it: the dataset's writer (holding the lock), the run's
    id, the model's name, how many batches in a row have kept nothing (`empty`), and the curation
    chain when the flow curates (the local runner; a job's `finish` may report what it found)."""

    writer: DatasetWriter
    run_id: str
    dataset: DatasetConfig
    model_name: str
    empty: int = 0
    chain: FilterChain | None = None

    @property
    def info(self) -> RunInfo:
        """The run's committed record in the manifest."""
        return self.writer.manifest.runs[self.run_id]


R_co = TypeVar("R_co", bound=RunSummary, covariant=True)


class Job(Protocol[R_co]):
    """A generator's part of a run, whose summary is an `R_co`. A job may also say
    `independent = True` (a class attribute): making batch n+1 reads nothing that committing batch
    n changes, so runners make batches ahead of their turn (a background thread locally; several
    workers on Ray).

    `state_type` is the type of the run's state (a `RunState`, checked when a run resumes); `fold` adds
    a batch's delta to it. Both are typed by each job: the protocol takes them as any."""

    @property
    def generator(self) -> str:
        """The generator's name, as records and the manifest carry it."""
        ...

    @property
    def run_id(self) -> str: ...

    @property
    def config(self) -> BaseModel: ...

    @property
    def state_type(self) -> Any:
        """The job's state type (a `RunState` TypedDict)."""
        ...

    def open(self, run: RunContext) -> str:
        """Read what the run needs from the committed dataset (a pool to refill, say); returns the
        progress artifact's description. Runs on the flow; loads no model."""
        ...

    def plan(self, run: RunContext) -> Iterator[Spec]:
        """The batches still to make, lazily: a dependent job's next batch is planned once the one
        before is committed."""
        ...

    def make(self, maker: Maker, spec: Spec) -> Batch[Any]:
        """Make one batch (on the flow or on a worker): reads only `spec` and the job's config."""
        ...

    def fold(self, state: Any, delta: Any) -> Any:
        """The run's state once a batch with `delta` is committed on top of `state`."""
        ...

    def committed(self, run: RunContext, spec: Spec, batch: Batch[Any], result: Committed) -> str:
        """Called on the flow once the batch is in the dataset; returns what the log line says of it."""
        ...

    def progress(self, run: RunContext) -> float: ...

    def finish(self, run: RunContext, summary: RunSummary) -> R_co:
        """The run's summary with the job's own figures added."""
        ...


class Replacing(Protocol):
    """A job that says `replaces = True`: its one batch swaps the dataset's kept records for the
    curated batches `replacement` yields (curating a dataset in place; the local runner only)."""

    def replacement(self, chain: FilterChain, spec: Spec) -> Iterator[tuple[list[Record], list[Reject]]]: ...


def chain_settings(job: Job) -> tuple[str, str | None]:
    """The language and profile the run's curation chain follows: a generator's config gives both
    (a config without a profile runs as `paper`); a job that is not a generator's run (curating a
    file, writing a selection) says `generator_run = False`, and its chain runs in English as
    outside a generator run (heuristics on unless the curation config turns them off)."""
    if not getattr(job, "generator_run", True):
        return "en", None
    return getattr(job.config, "language", "en"), getattr(job.config, "profile", "paper")


class MergedState:
    """A job whose batches' deltas are the state keys they set (the default `fold`), of its
    `state_type`."""

    state_type: ClassVar[Any] = RunState

    def fold(self, state: Any, delta: Any) -> Any:
        return {**state, **delta}


G = TypeVar("G")


@dataclass
class Built(MergedState, Generic[G]):
    """A job whose batches are made by a generator object built for the maker's engine (`build`),
    once per maker: on the flow for a local run, on each worker for a Ray run. The live generator
    stays where it was built (it is not part of what a job ships to a worker)."""

    _gen: G | None = field(default=None, init=False, repr=False)
    _maker: Maker | None = field(default=None, init=False, repr=False)
    # A field that may hold live engines (tests), which cannot be shipped to Ray workers, and the
    # config field that names them instead, for the error that says so. None: no such field.
    live: ClassVar[tuple[str, str] | None] = None

    def build(self, maker: Maker) -> G:
        raise NotImplementedError

    def second(self) -> Engine | None:
        """The job's second engine (a target, a student): the live one its `live` field holds (tests),
        else the one its config's field of the paired name gives, else None (the run's engine)."""
        assert self.live is not None, f"{type(self).__name__}: no second engine field"
        held, named = self.live
        return second_engine(getattr(self, held), getattr(self.config, named))  # type: ignore[attr-defined]

    def gen_for(self, maker: Maker) -> G:
        if self._gen is None or self._maker is not maker:
            self._gen, self._maker = self.build(maker), maker
        return self._gen

    def forget(self, maker: Maker) -> None:
        """Drop the generator built for `maker`: the next `gen_for` builds a fresh one."""
        if self._maker is maker:
            self._gen = self._maker = None

    @property
    def gen(self) -> G | None:
        """The generator last built, if any (on the flow: None when batches were made elsewhere)."""
        return self._gen

    def __getstate__(self) -> dict[str, Any]:
        if self.live is not None and getattr(self, self.live[0]) is not None:
            held, instead = self.live
            raise ValueError(f"live engines ({held}) cannot be sent to Ray workers: name them in {instead}")
        state = dict(self.__dict__)
        state["_gen"] = state["_maker"] = None
        return state


RETRY_DELAYS = (5.0, 30.0)


@dataclass(frozen=True)
class Retries:
    """How often a runner retries a failed batch, and the seconds it waits before each retry (the
    last delay for the retries past the list)."""

    times: int = 2
    delays: tuple[float, ...] = RETRY_DELAYS

    def task_options(self) -> dict[str, Any]:
        """The options of a Prefect batch task that retries this way."""
        return {"retries": self.times, "retry_delay_seconds": list(self.delays) or [0.0]}
