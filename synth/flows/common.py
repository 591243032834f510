"""Pieces every generator flow shares."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from synth.engines.base import Metered
from synth.filters.base import FilterChain
from synth.filters.minhash import Index
from synth.filters.redis_log import RedisUnavailableError
from synth.schemas import Record, Reject, RunInfo, ShardInfo
from synth.schemas.runs import RunState, RunSummary, Tokens, state_of
from synth.shards import DatasetError, DatasetWriter
from synth.shards.atomic import ReplacedNotSyncedError, is_disk_full

_log = logging.getLogger(__name__)


@dataclass
class Committed:
    """What one batch put into the dataset (after curation)."""

    shards: list[ShardInfo]
    kept: int
    rejected: int

    @property
    def paths(self) -> list[str]:
        return [s.path for s in self.shards]


def commit_curated(
    writer: DatasetWriter,
    rid: str,
    batch: int,
    chain: FilterChain,
    index: Index | None,
    kept: Sequence[Record],
    rejects: Sequence[Reject],
    state: Mapping[str, Any] | None = None,
    meter: Metered | None = None,
) -> Committed:
    """Run a batch's records through the curation chain, commit what survives with every reject,
    then bring the dataset's MinHash index up to date with the new shards.

    The chain's dedup state changes only if the batch commits: when curation (a judge call) or the
    write fails, what the filters staged is rolled back, so a retry starts from the committed state
    and never takes its own records for duplicates. With `meter`, the tokens the batch used (its
    generation and its curation) are added to the run's `state["tokens"]` in the same commit."""
    try:
        curated = chain.apply(kept)
        all_rejects = [*rejects, *curated.rejects]
        if meter is not None:
            committed = writer.manifest.runs[rid].state
            state = {
                **(state if state is not None else committed),
                "tokens": meter.take(committed.get("tokens"), batch),
            }
        shards = writer.commit_batch(rid, batch, curated.kept, all_rejects, state=state)
    except BaseException:
        if writer.manifest.runs[rid].batches_done > batch:  # the manifest landed; only a sync failed
            chain.commit()
        else:
            chain.rollback()
        raise
    chain.commit()
    if index is not None:
        try:
            index.sync(writer.path)
        except OSError as e:  # derived state: the next open catches up from the manifest
            _log.warning("%s: could not persist the MinHash index (%s); it is rebuilt on next use", writer.path, e)
    return Committed(shards, len(curated.kept), len(all_rejects))


def worth_retrying(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry condition of batch tasks: engine hiccups are retried, faults that a retry
    cannot fix (a full disk, Redis gone, a dataset error) stop the run at once."""
    error = state.data if isinstance(state.data, BaseException) else None
    return not (is_disk_full(error) or isinstance(error, RedisUnavailableError | DatasetError | ReplacedNotSyncedError))


class Progress:
    """A progress artifact on the current flow run (nothing outside one), updated as batches commit."""

    def __init__(self, description: str) -> None:
        from prefect.context import FlowRunContext

        self.artifact_id = None
        if FlowRunContext.get() is not None:
            from prefect.artifacts import create_progress_artifact

            self.artifact_id = create_progress_artifact(progress=0.0, description=description)

    def update(self, fraction: float) -> None:
        if self.artifact_id is not None:
            from prefect.artifacts import update_progress_artifact

            update_progress_artifact(self.artifact_id, progress=round(100 * min(1.0, fraction), 1))  # type: ignore[arg-type]


@dataclass(frozen=True)
class RunProgress:
    """Where a run stands after a batch commits, for whoever watches it (`watching`)."""

    run_id: str
    generator: str
    fraction: float  # share of the run done, 0..1
    kept: int
    rejected: int
    rejects_by_stage: dict[str, int]
    seconds_left: float | None  # at this session's pace; None until it can be told
    tokens_per_second: float | None  # completion tokens the model wrote per second this session


_watchers: list[Callable[[RunProgress], None]] = []


@contextmanager
def watching(callback: Callable[[RunProgress], None]) -> Iterator[None]:
    """Call `callback` with every run's progress while the block runs (a terminal's progress bar)."""
    _watchers.append(callback)
    try:
        yield
    finally:
        _watchers.remove(callback)


def tell_watchers(progress: RunProgress) -> None:
    for callback in list(_watchers):
        try:
            callback(progress)
        except Exception:  # a display that fails must not fail the run
            logging.getLogger(__name__).debug("progress display failed", exc_info=True)


@contextmanager
def prints_not_logged() -> Iterator[None]:
    """Inside the block, `print` prints instead of going to the flow run's log. Fine-tuning inside a
    flow that logs prints fills the log with bytecode listings (printed by a library only when
    `print` is Prefect's patched one); training keeps to its own progress lines."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is None or not context.log_prints:
        yield
        return
    with context.model_copy(update={"log_prints": False}):
        yield


class Pace:
    """How fast a run goes in this session: the share done, the time left at this pace, and the
    tokens the model writes per second (from the run's token counts)."""

    def __init__(self, fraction: float, tokens: Tokens, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.started = clock()
        self.fraction = fraction
        self.tokens = _completion_tokens(tokens)

    def figures(self, fraction: float, tokens: Tokens) -> tuple[float, float | None, float | None]:
        """(share done, seconds left, completion tokens per second); None where not yet known."""
        elapsed = self.clock() - self.started
        done = min(1.0, fraction)
        left = None
        if done < 1.0 and done > self.fraction and elapsed > 0:
            left = elapsed / (done - self.fraction) * (1.0 - done)
        written = _completion_tokens(tokens) - self.tokens
        rate = written / elapsed if elapsed > 0 and written > 0 else None
        return done, left, rate

    def line(self, fraction: float, tokens: Tokens) -> str:
        done, left, rate = self.figures(fraction, tokens)
        parts = [f"{done:.0%} done"]
        if left is not None:
            parts.append(f"about {duration(left)} left")
        if rate is not None:
            parts.append(f"{rate:,.0f} tokens/s written")
        return ", ".join(parts)

    def progress(self, info: RunInfo, fraction: float) -> RunProgress:
        done, left, rate = self.figures(fraction, state_of(info, RunState).get("tokens", {}))
        stages = {stage: sum(reasons.values()) for stage, reasons in info.rejects_by_reason.items()}
        return RunProgress(info.run_id, info.generator, done, info.kept, info.rejected, stages, left, rate)


def _completion_tokens(tokens: Tokens) -> int:
    return sum(t.get("completion", 0) for t in tokens.values())


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def start_run(
    writer: DatasetWriter,
    rid: str,
    generator: str,
    config: BaseModel,
    engine: BaseModel | None,
    model_name: str,
    curation: BaseModel | None = None,
) -> None:
    """Register the run in the dataset, or reopen it to resume (see `DatasetWriter.start_run`)."""
    writer.start_run(
        RunInfo(
            run_id=rid,
            generator=generator,
            config=config.model_dump(),
            engine=engine.model_dump() if engine is not None else {},
            curation=curation.model_dump() if curation is not None else {},
            model=model_name,
        )
    )


def run_summary(writer: DatasetWriter, rid: str, path: str | Path, reached_target: bool) -> RunSummary:
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
        "tokens": run.state.get("tokens", {}),
        "reached_target": reached_target,
    }


def run_logger() -> Any:
    """The flow run's logger inside a flow (its lines reach the Prefect UI), else this module's."""
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("synth.flows.run")
