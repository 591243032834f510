"""The kinds of job a generator builds on (see `synth.flows.jobs`): a `ChunkedJob` over a fixed list
of source items, a `TargetJob` that makes batches until a number of records is kept, and a
`OneBatchJob` that writes data as it is in one batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, Generic, NamedTuple, TypeVar, cast, get_type_hints

from typing_extensions import TypedDict

from synth.flows.common import run_logger
from synth.flows.jobs import Batch, Built, G, MergedState, RunContext, Spec
from synth.schemas import Outcome, RunInfo
from synth.schemas.runs import RunState, RunSummary, TargetSummary, state_of

if TYPE_CHECKING:
    from synth.flows.common import Committed


class ChunkWords(NamedTuple):
    """How the progress artifact and the log lines of a chunked run speak of it: the method
    ("CodecLM"), its source items ("seed instructions") and, where the log line counts them, the
    kept records ("pairs kept")."""

    title: str
    items: str
    kept: str | None = None


C = TypeVar("C")  # a chunked job's counts
R = TypeVar("R", bound=RunSummary)


class ChunkedSummary(RunSummary):
    """The summary of a chunked run: how many source items it read. Its job's summary type adds
    the counts under the job's `counts_key`."""

    source_instructions: int


def counted_state(name: str, key: str, counts: Any) -> Any:
    """The state type (a `RunState`) of a run that adds up counts of type `counts` under `key`."""
    make = cast(Any, TypedDict)  # a TypedDict made at run time, from the subclass's key
    return make(name, {**get_type_hints(RunState), key: counts}, total=False)


@dataclass
class ChunkedJob(Built[G], Generic[G, C, R]):
    """A job over a fixed list of source items, one batch per chunk of the config's `chunk_size`:
    batch n is chunk n, so a resumed run goes on at the first chunk not committed. Its summary (an
    `R`, a `ChunkedSummary`) counts the source items. Subclasses build the generator (`build`) and
    make a chunk (`make`), which reads nothing of the committed state (so its batches are
    independent). A job whose chunks have counts of their own (a `C`) makes its batches with
    `counted`: the counts add up (`add_counts`) in the run's state and its summary under
    `counts_key`, a key `R` declares; its `state_type` is made from the key and `counts_type`."""

    config: Any  # a config with a `chunk_size`
    items: list[Any]
    run_id: str
    independent: ClassVar[bool] = True
    counts_key: ClassVar[str | None] = None  # where the chunks' counts add up, in the run's state and summary
    counts_type: ClassVar[Any] = dict[str, int]  # a chunk's counts, and the run's (a `C`)
    words: ClassVar[ChunkWords]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.counts_key is not None:  # the run's state: the shared part and the counts
            cls.state_type = counted_state(f"{cls.__name__}State", cls.counts_key, cls.counts_type)

    @staticmethod
    def add_counts(total: C, new: C) -> C:
        """The run's counts so far with one chunk's added: by default, count by count (a
        `dict[str, int]`)."""
        old, more = cast(dict[str, int], total), cast(dict[str, int], new)
        return cast(C, {k: old.get(k, 0) + more.get(k, 0) for k in {*old, *more}})

    def counted(self, made: Outcome, counts: C) -> Batch[dict[str, C]]:
        """The batch of a chunk the generator `made`, whose `counts` add to the run's when it commits."""
        assert self.counts_key is not None, "counts_key first"
        return Batch(made.kept, made.rejects, {self.counts_key: counts})

    def fold(self, state: dict[str, Any], delta: dict[str, C]) -> dict[str, Any]:
        # The key is the subclass's (`counts_key`), so the state is handled as a plain dict here;
        # its shape is the subclass's `state_type`, checked when a run resumes.
        key = self.counts_key
        if key is None or key not in delta:
            return cast(dict[str, Any], super().fold(state, delta))
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

    def committed(self, run: RunContext, spec: Spec, batch: Batch[Any], result: Committed) -> str:
        kept = f", {len(batch.kept)} {self.words.kept}" if self.words.kept else ""
        return f"{len(spec.data)} {self.words.items}{kept}"

    def plan(self, run: RunContext) -> Iterator[Spec]:
        for chunk in range(run.info.batches_done, len(self.chunks)):
            yield Spec(chunk, self.chunks[chunk])

    def progress(self, run: RunContext) -> float:
        return run.info.batches_done / max(1, len(self.chunks))

    def finish(self, run: RunContext, summary: RunSummary) -> R:
        figures: dict[str, Any] = {"source_instructions": len(self.items)}
        if self.counts_key is not None:
            figures[self.counts_key] = run.info.state.get(self.counts_key, {})
        return cast(R, {**summary, **figures})


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

    def spec_for(self, info: RunInfo, pending: Batch[Any] | None = None) -> Spec:
        """The batch planned from the run `info`, where `pending`, a batch made and not yet
        committed, is taken as committed (`info` then holds its counts and folded state)."""
        return Spec(info.batches_done, self.size(info))

    def speculate(self, run: RunContext, spec: Spec, batch: Batch[Any]) -> Spec | None:
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

    def finish(self, run: RunContext, summary: RunSummary) -> TargetSummary:
        reached = run.info.kept >= self.config.num_records
        return {**summary, "reached_target": reached, "stopped": self.stop_line(run.info)}


class OneBatchState(RunState, total=False):
    done: bool


class OneBatchJob(MergedState):
    """A run of one batch, planned until it is committed (data written as it is, such as a
    method's seed data); the subclass's `make` returns a delta holding `done: True`."""

    state_type: ClassVar[Any] = OneBatchState

    def plan(self, run: RunContext) -> Iterator[Spec]:
        if not state_of(run.info, OneBatchState).get("done"):
            yield Spec(run.info.batches_done)

    def progress(self, run: RunContext) -> float:
        return 1.0 if state_of(run.info, OneBatchState).get("done") else 0.0

    def finish(self, run: RunContext, summary: RunSummary) -> RunSummary:
        return summary
