"""A generator's part of a run, as runners see it: a `Job` plans batches from the committed run and
makes each one from a `Spec` with a `Maker` (the engine and the curation rules), never seeing the
dataset's writer. What a batch adds to the run's state travels with it as data (`Batch.delta`) and
is folded into the committed state by the runner that commits it (`Job.fold`), so a batch can be
made anywhere: in the flow's process, ahead of its turn in a background thread, or on a Ray worker.

Runners (`synth.flows.local` on this process, `synth.flows.scaleout` on Ray; `synth.flows.run` picks one) own the rest: the
lock, the run's start and finish in the manifest, curation, commits in batch order, token
metering, progress and the summary.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, Generic, NamedTuple, Protocol, TypeVar

from pydantic import BaseModel

from synth.engines import Engine, second_engine
from synth.filters.base import FilterChain
from synth.flows.common import run_logger
from synth.schemas import DatasetConfig, Outcome, Record, Reject, RunInfo

if TYPE_CHECKING:
    from synth.flows.common import Committed
    from synth.shards import DatasetWriter


@dataclass
class Spec:
    """One planned batch: its number in the run and what the generator needs to make it (data a
    worker can be sent: it holds everything the batch reads of the committed run)."""

    batch: int
    data: Any = None


@dataclass
class Batch(Outcome):
    """What a generator made for one batch, before curation, and what it adds to the run's state
    (JSON data; `Job.fold` adds it to the committed state when the batch commits)."""

    delta: dict[str, Any] = field(default_factory=dict)


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


class Job(Protocol):
    """A generator's part of a run. A job may also say `independent = True` (a class attribute):
    making batch n+1 reads nothing that committing batch n changes, so runners make batches ahead
    of their turn (a background thread locally; several workers on Ray)."""

    @property
    def generator(self) -> str:
        """The generator's name, as records and the manifest carry it."""
        ...

    @property
    def run_id(self) -> str: ...

    @property
    def config(self) -> BaseModel: ...

    def open(self, run: RunContext) -> str:
        """Read what the run needs from the committed dataset (a pool to refill, say); returns the
        progress artifact's description. Runs on the flow; loads no model."""
        ...

    def plan(self, run: RunContext) -> Iterator[Spec]:
        """The batches still to make, lazily: a dependent job's next batch is planned once the one
        before is committed."""
        ...

    def make(self, maker: Maker, spec: Spec) -> Batch:
        """Make one batch (on the flow or on a worker): reads only `spec` and the job's config."""
        ...

    def fold(self, state: dict[str, Any], delta: dict[str, Any]) -> dict[str, Any]:
        """The run's state once a batch with `delta` is committed on top of `state`."""
        ...

    def committed(self, run: RunContext, spec: Spec, batch: Batch, result: Committed) -> str:
        """Called on the flow once the batch is in the dataset; returns what the log line says of it."""
        ...

    def progress(self, run: RunContext) -> float: ...

    def finish(self, run: RunContext, summary: dict[str, Any]) -> None:
        """Add the generator's own figures to the run's summary."""
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
    """A job whose batches' deltas are the state keys they set (the default `fold`)."""

    def fold(self, state: dict[str, Any], delta: dict[str, Any]) -> dict[str, Any]:
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


class ChunkWords(NamedTuple):
    """How the progress artifact and the log lines of a chunked run speak of it: the method
    ("CodecLM"), its source items ("seed instructions") and, where the log line counts them, the
    kept records ("pairs kept")."""

    title: str
    items: str
    kept: str | None = None


@dataclass
class ChunkedJob(Built[G]):
    """A job over a fixed list of source items, one batch per chunk of the config's `chunk_size`:
    batch n is chunk n, so a resumed run goes on at the first chunk not committed. Its summary
    counts the source items. Subclasses build the generator (`build`) and make a chunk (`make`),
    which reads nothing of the committed state (so its batches are independent). A job whose
    chunks have counts of their own makes its batches with `counted`: the counts add up
    (`add_counts`) in the run's state and its summary under `counts_key`."""

    config: Any  # a config with a `chunk_size`
    items: list[Any]
    run_id: str
    independent: ClassVar[bool] = True
    counts_key: ClassVar[str | None] = None  # where the chunks' counts add up, in the run's state and summary
    words: ClassVar[ChunkWords]

    @staticmethod
    def add_counts(total: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
        """The run's counts so far with one chunk's added: by default, count by count."""
        return {k: total.get(k, 0) + new.get(k, 0) for k in {*total, *new}}

    def counted(self, made: Outcome, counts: dict[str, Any]) -> Batch:
        """The batch of a chunk the generator `made`, whose `counts` add to the run's when it commits."""
        assert self.counts_key is not None, "counts_key first"
        return Batch(made.kept, made.rejects, {self.counts_key: counts})

    def fold(self, state: dict[str, Any], delta: dict[str, Any]) -> dict[str, Any]:
        key = self.counts_key
        if key is None or key not in delta:
            return super().fold(state, delta)
        return {**state, key: self.add_counts(state.get(key, {}), delta[key])}

    @cached_property
    def chunks(self) -> list[list[Any]]:
        size = self.config.chunk_size
        return [self.items[i : i + size] for i in range(0, len(self.items), size)]

    def __getstate__(self) -> dict[str, Any]:
        # A worker gets its chunk in the batch's spec: the source list (maybe millions of items)
        # stays on the flow.
        state = super().__getstate__()
        state["items"] = []
        state.pop("chunks", None)
        return state

    def open(self, run: RunContext) -> str:
        title, items = self.words.title, self.words.items
        return f"{title} into {run.dataset.path}: chunks of {self.config.chunk_size} {items} done"

    def committed(self, run: RunContext, spec: Spec, batch: Batch, result: Committed) -> str:
        kept = f", {len(batch.kept)} {self.words.kept}" if self.words.kept else ""
        return f"{len(spec.data)} {self.words.items}{kept}"

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


@dataclass
class TargetJob(Built[G]):
    """A job that makes batches until the config's `num_records` are kept; its progress is the
    share of the target kept. It stops before the target only on a budget the user set
    (`max_batches`) or on a stall (`STALL_BATCHES` batches in a row that kept nothing), and says
    which in `stopped` (also the summary's `stopped`, and a warning in the run's log). Subclasses
    build the generator (`build`), size the next batch from the committed run (`size`) and make
    it (`make`). Its batches are dependent: each is planned from the run as the one before left it."""

    config: Any  # a config with `num_records` and `max_batches` (None: no budget)
    stopped: str = field(default="", init=False)

    def plan(self, run: RunContext) -> Iterator[Spec]:
        # The stall is counted over this session's batches (`run.empty`): a resumed run that had
        # stalled tries again.
        while not (why := self._stop(run.info, run.empty)):
            yield self.spec(run)
        self.stopped = why
        if why != "target":
            run_logger().warning("run stopped before its target: %s", self.stop_line(run.info))

    def spec(self, run: RunContext) -> Spec:
        """The next batch, planned from the committed run."""
        return self.spec_for(run.info)

    def spec_for(self, info: RunInfo, pending: Batch | None = None) -> Spec:
        """The batch planned from the run `info`, where `pending`, a batch made and not yet
        committed, is taken as committed (`info` then holds its counts and folded state)."""
        return Spec(info.batches_done, self.size(info))

    def speculate(self, run: RunContext, spec: Spec, batch: Batch) -> Spec | None:
        """The next batch's spec once `batch` (of `spec`) commits, when that is certain whatever
        curation keeps of it: the spec planned as if curation kept every record equals the one
        planned as if it kept none, and neither run would stop. None otherwise (the runner then
        waits for the commit; near the target the size follows the kept count)."""
        state = self.fold(run.info.state, batch.delta)
        done = spec.batch + 1
        kept_all = run.info.model_copy(
            update={"kept": run.info.kept + len(batch.kept), "batches_done": done, "state": state}
        )
        kept_none = run.info.model_copy(update={"batches_done": done, "state": state})
        if self._stop(kept_all, 0 if batch.kept else run.empty + 1) or self._stop(kept_none, run.empty + 1):
            return None
        following = self.spec_for(kept_all, batch)
        return following if following == self.spec_for(kept_none, batch) else None

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
        """The next batch's size, from the committed run."""
        raise NotImplementedError

    def run_total(self, run: RunContext) -> str:
        """What a batch's log line says of the run as a whole."""
        return f"run total {run.info.kept}/{self.config.num_records} kept"

    def progress(self, run: RunContext) -> float:
        return run.info.kept / self.config.num_records

    def finish(self, run: RunContext, summary: dict[str, Any]) -> None:
        summary["reached_target"] = run.info.kept >= self.config.num_records
        summary["stopped"] = self.stop_line(run.info)


class OneBatchJob(MergedState):
    """A run of one batch, planned until it is committed (data written as it is, such as a
    method's seed data); the subclass's `make` returns a delta holding `done: True`."""

    def plan(self, run: RunContext) -> Iterator[Spec]:
        if not run.info.state.get("done"):
            yield Spec(run.info.batches_done)

    def progress(self, run: RunContext) -> float:
        return 1.0 if run.info.state.get("done") else 0.0

    def finish(self, run: RunContext, summary: dict[str, Any]) -> None:
        pass
