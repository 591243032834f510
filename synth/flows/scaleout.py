"""The Ray runner: a job's batches made and curated on Ray workers, committed by the flow in order.

It runs any generator's `Job`, the same object the local runner runs. The flow plans the batches
(`Job.plan`) and sends each worker the job and one batch's `Spec`, which holds everything the batch
reads of the committed run. On its worker, a batch is made with the job's own `make`, curated
against the shared Redis MinHash index, and staged in `DIR/staging/RUN/batch-NNNNNN/` (written to
a temporary folder, then renamed) with what it adds to the run's state (`Batch.delta`), the tokens
its engine calls used and the time the engine spent on them. The worker returns the folder's
path, never the records.

The flow keeps the dataset's single writer. It commits staged batches strictly in batch order,
folding each delta into the committed state as the local runner does, so the manifest stays the
one truth and resume works as without Ray: a batch staged before a crash is committed from its
folder on the next run instead of being made again. A job whose batches are independent has up to
`workers` batches in flight; a dependent job (Self-Instruct's pool, Magpie's and Self-Instruct's
batch sizes, backtranslation's rounds) plans each batch once the one before is committed, as the
local run does, so both write the same records for the same seeds. A worker's failure retries
that batch only (the task's retries).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any, TypedDict, TypeVar

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from synth import registry
from synth.engines import get_engine
from synth.engines.base import Metered, add_tokens
from synth.engines.embedded import EMBEDDED_MODEL_NAME
from synth.filters.base import FilterChain
from synth.filters.redis_index import RedisMinHashIndex
from synth.flows.bookkeeping import Tracker, after_commit, engine_use, finished
from synth.flows.common import Committed, start_run, worth_retrying
from synth.flows.curation import build_chain
from synth.flows.jobs import Batch, Job, Maker, Retries, RunContext, Spec, chain_settings
from synth.registry import Generator
from synth.schemas import DatasetConfig, EngineConfig, Record, Reject
from synth.schemas.curation import CurationConfig
from synth.schemas.recipe import RayRunner
from synth.schemas.runs import RunSummary, Tokens
from synth.shards import DatasetWriter

STAGING = "staging"

R = TypeVar("R", bound=RunSummary)


class StagedMeta(TypedDict):
    """What a staged batch says of itself besides its records: the worker that made it, the
    delta it adds to the run's state, the tokens it used and its engine's busy seconds."""

    worker: str
    delta: Any  # the job's delta type
    tokens: Tokens
    busy_seconds: float


def staged_path(dataset: str | Path, rid: str, batch: int) -> Path:
    return Path(dataset) / STAGING / rid / f"batch-{batch:06d}"


# -- on the worker ----------------------------------------------------------------------------------

# Per worker process and run: the first copy of the run's job it was sent (so its generator, and
# the pool the generator keeps, live on between batches), its maker and its curation chain.
_parts: dict[str, tuple[Job, Maker, FilterChain]] = {}


def _worker_parts(
    job: Job[Any], engine: EngineConfig, curation: CurationConfig, dataset: str
) -> tuple[Job, Maker, FilterChain]:
    key = json.dumps([dataset, job.run_id, curation.model_dump(mode="json"), engine.model_dump(mode="json")])
    if key not in _parts:
        live = Metered(get_engine(engine))
        language, profile = chain_settings(job)
        chain = build_chain(curation, dataset, engine=live, language=language, profile=profile)[0]
        _parts[key] = (job, Maker(live, chain.rules(), dataset), chain)
    return _parts[key]


def _write_staged(target: Path, kept: list[Record], rejects: list[Reject], meta: StagedMeta) -> None:
    """Stage a batch: a temporary folder renamed into place, so a folder that exists is whole."""
    if target.exists():
        return
    temp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex}")
    temp.mkdir(parents=True)
    (temp / "kept.jsonl").write_text("".join(r.model_dump_json() + "\n" for r in kept))
    (temp / "rejects.jsonl").write_text("".join(r.model_dump_json() + "\n" for r in rejects))
    (temp / "meta.json").write_text(json.dumps(meta))
    try:
        temp.rename(target)
    except OSError:  # another attempt staged the same batch first: keep that one
        shutil.rmtree(temp, ignore_errors=True)


def make_staged(
    job: Job[Any],
    spec: Spec,
    engine: EngineConfig,
    curation: CurationConfig,
    dataset: str,
    entry: Generator | None = None,
) -> str:
    """Make, curate and stage one batch of `job`; returns the staged folder's path (one staged
    before is returned as it is, not made again). `entry`: the job's registry entry on the flow,
    registered here where this process lacks it (a generator registered at run time, whose block
    and reject stages the worker's records need)."""
    if entry is not None and registry.GENERATORS.get(entry.name) != entry:
        registry.register(entry)
    target = staged_path(dataset, job.run_id, spec.batch)
    if target.exists():
        return str(target)
    job, maker, chain = _worker_parts(job, engine, curation, dataset)
    meter = maker.engine
    assert isinstance(meter, Metered)
    busy = meter.busy_seconds
    batch: Batch[Any] = job.make(maker, spec)
    try:
        curated = chain.apply(batch.kept)
        meta: StagedMeta = {
            "worker": f"{socket.gethostname()}:{os.getpid()}",
            "delta": batch.delta,
            "tokens": meter.take(),  # a failed attempt's tokens too: they were spent
            "busy_seconds": meter.busy_seconds - busy,
        }
        _write_staged(target, curated.kept, [*batch.rejects, *curated.rejects], meta)
    except BaseException:
        chain.rollback()  # the batch is not staged: its records leave the shared index
        raise
    chain.commit()
    return str(target)


@task(name="staged-batch", cache_policy=NONE, retry_condition_fn=worth_retrying)
def stage_batch(
    job: Job[Any], spec: Spec, engine: EngineConfig, curation: CurationConfig, dataset: str, entry: Generator | None
) -> str:
    """A batch on a Ray worker (see `make_staged`)."""
    path = make_staged(job, spec, engine, curation, dataset, entry)
    get_run_logger().info("batch %d of %s staged at %s", spec.batch, job.run_id, path)
    return path


# -- on the flow ------------------------------------------------------------------------------------


def read_staged(path: str | Path) -> tuple[list[Record], list[Reject], StagedMeta]:
    folder = Path(path)
    kept = [Record.model_validate_json(line) for line in (folder / "kept.jsonl").read_text().splitlines() if line]
    rejects = [Reject.model_validate_json(line) for line in (folder / "rejects.jsonl").read_text().splitlines() if line]
    return kept, rejects, json.loads((folder / "meta.json").read_text())


def discard_staged(dataset: str | Path, rid: str, from_batch: int, curation: CurationConfig) -> None:
    """Remove the run's staged folders: those of committed batches (before `from_batch`) as they
    are, those from `from_batch` on with their records taken out of the index."""
    folder = Path(dataset) / STAGING / rid
    if not folder.is_dir():
        return
    index = RedisMinHashIndex.open(dataset, curation.minhash) if curation.minhash.enabled else None
    for staged in sorted(folder.iterdir()):
        if not staged.name.startswith(".") and int(staged.name.split("-")[1]) >= from_batch and index is not None:
            kept, _, _ = read_staged(staged)
            with index.locked():
                index.remove([r.id for r in kept])
        shutil.rmtree(staged, ignore_errors=True)
    if not any(folder.iterdir()):
        folder.rmdir()


def _commit(job: Job[Any], run: RunContext, spec: Spec, path: str) -> float:
    """Commit a staged batch in the run's order, folding its delta, tokens and worker into the
    state, then remove its folder; returns the seconds its engine was busy."""
    kept, rejects, meta = read_staged(path)
    committed = run.info.state
    state = job.fold(committed, meta["delta"])
    workers = dict(committed.get("workers", {}))
    workers[meta["worker"]] = workers.get(meta["worker"], 0) + 1
    state = {**state, "tokens": add_tokens(committed.get("tokens"), meta["tokens"]), "workers": workers}
    shards = run.writer.commit_batch(run.run_id, spec.batch, kept, rejects, state=state)
    shutil.rmtree(path, ignore_errors=True)
    after_commit(job, run, spec, Batch(kept, rejects, meta["delta"]), Committed(shards, len(kept), len(rejects)))
    return float(meta.get("busy_seconds", 0.0))


def run_on_ray(
    job: Job[R],
    engine: EngineConfig,
    dataset: DatasetConfig,
    curation: CurationConfig,
    runner: RayRunner,
    retries: Retries,
) -> R:
    """Run (or resume) `job` with its batches on Ray workers; returns the run's summary. The flow
    calling this needs a Ray task runner. An ability mixture is refused (each worker's chain would
    count only its own records, so together they would overshoot its targets), and so is a
    near-duplicate index that is not the shared Redis one."""
    if curation.mixture:
        raise ValueError("an ability mixture needs the local runner (each Ray worker would count only its own records)")
    if curation.minhash.enabled and curation.minhash.backend != "redis":
        raise ValueError("a Ray runner needs the shared MinHash index: set curation.minhash.backend to 'redis'")
    stage = stage_batch.with_options(name=f"{job.generator}-staged-batch", **retries.task_options())
    entry = registry.GENERATORS.get(job.generator)
    model_name = engine.model or EMBEDDED_MODEL_NAME
    with DatasetWriter(dataset.path, shard_rows=dataset.shard_rows, wait=dataset.wait, holder=job.run_id) as writer:
        start_run(writer, job.run_id, job.generator, job.config, engine, model_name, curation)
        run = RunContext(writer, job.run_id, dataset, model_name)
        tracker = Tracker(job, run)
        width = runner.workers if getattr(job, "independent", False) else 1
        plan = job.plan(run)
        in_flight: deque[tuple[Spec, Any]] = deque()
        started, made, busy = time.perf_counter(), 0, 0.0
        try:
            while True:
                while len(in_flight) < width and (spec := next(plan, None)) is not None:
                    in_flight.append(
                        (spec, _submit(runner, stage, job, spec, engine, curation, str(dataset.path), entry))
                    )
                if not in_flight:
                    break
                spec, future = in_flight.popleft()
                busy += _commit(job, run, spec, future.result())
                made += 1
                tracker.show()
                tracker.committed()
        finally:  # batches still in flight after a failure are staged, and reused on the next run
            for _, future in in_flight:
                future.wait()
        discard_staged(dataset.path, job.run_id, run.info.batches_done, curation)
        return finished(job, run, engine_use(busy, time.perf_counter() - started, made, width > 1))


def _submit(runner: RayRunner, stage: Any, *args: Any) -> Any:
    """Submit a batch to the Ray task runner with the runner's resource request."""
    from prefect_ray.context import remote_options

    with remote_options(num_gpus=runner.num_gpus, num_cpus=runner.num_cpus):
        return stage.submit(*args)
