"""What every runner does the same way around its batches: the log line and the stall count
after a commit, the engine's share of the run, and the summary at the end."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from synth.flows.common import Pace, Progress, run_logger, run_summary, tell_watchers
from synth.schemas.runs import EngineUse, RunState, RunSummary, check_state, state_of
from synth.shards.layout import MANIFEST

if TYPE_CHECKING:
    from synth.flows.common import Committed
    from synth.flows.jobs import Batch, Job, RunContext, Spec

R = TypeVar("R", bound=RunSummary)


def after_commit(job: Job[Any], run: RunContext, spec: Spec, batch: Batch[Any], result: Committed) -> list[str]:
    """Tell the job its batch is in, count a batch that kept nothing towards a stall, and log it;
    returns the paths of the shards written."""
    run.empty = 0 if result.kept else run.empty + 1
    note = job.committed(run, spec, batch, result)
    run_logger().info("batch %d: %s; %d kept, %d rejected", spec.batch, note, result.kept, result.rejected)
    return result.paths


class Tracker:
    """What a run shows of its progress: the flow run's progress artifact (`show`), and after each
    commit the log line with the pace and the watchers' update (`committed`). A run resumed on a
    state its job cannot read (a damaged manifest) stops here, before its first batch."""

    def __init__(self, job: Job[Any], run: RunContext) -> None:
        where = f"{Path(run.dataset.path) / MANIFEST}: run {run.run_id}"
        check_state(job.state_type, run.info.state, where)
        self.job, self.run = job, run
        self.artifact = Progress(job.open(run))
        self.pace = Pace(job.progress(run), state_of(run.info, RunState).get("tokens", {}))

    def show(self) -> None:
        self.artifact.update(self.job.progress(self.run))

    def committed(self) -> None:
        fraction, info = self.job.progress(self.run), self.run.info
        run_logger().info("progress: %s", self.pace.line(fraction, state_of(info, RunState).get("tokens", {})))
        tell_watchers(self.pace.progress(info, fraction))


def finished(job: Job[R], run: RunContext, engine: EngineUse) -> R:
    """Mark the run finished in the manifest; returns its summary with the engine's use and the
    job's own figures."""
    run.writer.finish_run(job.run_id)
    summary = run_summary(run.writer, job.run_id, run.dataset.path, reached_target=True)
    summary["engine"] = engine
    done = job.finish(run, summary)
    if done is None:  # a job written to the older protocol, which added to the summary in place
        raise TypeError(f"{type(job).__name__}.finish must return the run's summary (with its own figures added)")
    return done


def engine_use(busy: float, wall: float, batches: int, pipelined: bool) -> EngineUse:
    """How much of this session's batch loop the engine spent serving calls, and its idle time
    per batch (what pipelining and a faster curation win back)."""
    return {
        "busy_seconds": round(busy, 6),
        "wall_seconds": round(wall, 3),
        "busy_share": round(busy / wall, 6) if wall > 0 else 0.0,
        "idle_seconds_per_batch": round(max(0.0, wall - busy) / batches, 3) if batches else 0.0,
        "pipelined": pipelined,
    }
