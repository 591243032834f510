"""Generator steps spread over a Ray cluster: batches run as self-contained Prefect tasks on Ray
workers, the flow commits them to the dataset in order.

A batch task carries everything it needs as data (a `BatchJob`): the generator's config, the
engine's config, the curation chain's config, the dataset's path and the batch's inputs. On its
worker it loads the engine once per process (`get_engine`), generates, curates against the shared
Redis MinHash index, and stages the result in `DIR/staging/RUN/batch-NNNNNN/` (written to a
temporary folder, then renamed). It returns that folder's path, never the records.

The flow keeps the dataset's single writer. It commits staged batches strictly in batch order,
so the manifest stays the one truth and resume works as without Ray: a batch that was staged
before a crash is committed from its folder on the next run instead of being generated again,
and one that was not is generated again with the same seeds (its records, already in the Redis
index under the same ids, are not taken for duplicates of themselves). Staged batches the run
did not need (Self-Instruct reached its target first) are removed, and their records leave the
index.

Self-Instruct on several workers: each batch starts from the task pool as committed when it was
submitted, so up to `workers - 1` batches in flight do not see each other's new tasks; the shared
near-duplicate index still keeps their records apart. Backtranslation steps run on the flow's
process (each round's few-shot pool depends on the previous round's curated output).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NONE
from pydantic import BaseModel, Field, field_validator

from synth.engines import Engine, get_engine
from synth.engines.embedded import EMBEDDED_MODEL_NAME
from synth.filters.base import FilterChain
from synth.filters.redis_index import RedisMinHashIndex
from synth.flows.common import Progress, run_summary, start_run, worth_retrying
from synth.flows.curation import build_chain
from synth.flows.evol_instruct import effective_config, evol_run_id, merge_rounds
from synth.flows.run import STALL_BATCHES
from synth.flows.self_instruct import accepted_tasks, prompts_for_batch, self_instruct_run_id
from synth.generators.evol_instruct import GENERATOR as EVOL
from synth.generators.evol_instruct import EvolInstructGenerator
from synth.generators.seeds import load_seed_tasks
from synth.generators.self_instruct import GENERATOR as SELF_INSTRUCT
from synth.generators.self_instruct import SelfInstructGenerator
from synth.generators.sources import load_instructions
from synth.schemas import DatasetConfig, EngineConfig, EvolInstructConfig, Example, Record, Reject, SelfInstructConfig
from synth.schemas.curation import CurationConfig
from synth.schemas.recipe import RayRunner
from synth.shards import DatasetWriter

STAGING = "staging"


class BatchJob(BaseModel):
    """One batch of a step, as data a Ray worker can run on its own."""

    generator: str = Field(description="A generator that can run on Ray (a key of `RAY_BATCHES`).")

    @field_validator("generator")
    @classmethod
    def _runs_on_ray(cls, name: str) -> str:
        if name not in RAY_BATCHES:
            raise ValueError(f"{name!r} does not run on Ray (Self-Instruct and Evol-Instruct do)")
        return name

    config: dict[str, Any]
    engine: EngineConfig
    curation: CurationConfig
    dataset: str
    run_id: str
    batch: int
    prompts: int = 0  # Self-Instruct: prompts to send
    pool: list[str] = Field(default_factory=list)  # Self-Instruct: machine tasks admitted so far
    items: list[dict[str, str]] = Field(default_factory=list)  # Evol-Instruct: the chunk's instructions


def staged_path(dataset: str | Path, rid: str, batch: int) -> Path:
    return Path(dataset) / STAGING / rid / f"batch-{batch:06d}"


# -- on the worker ----------------------------------------------------------------------------------

_chains: dict[str, FilterChain] = {}


def _chain(job: BatchJob) -> FilterChain:
    """The curation chain for the job's dataset, built once per worker process and run."""
    key = json.dumps([job.dataset, job.run_id, job.curation.model_dump(mode="json"), job.engine.model_dump()])
    if key not in _chains:
        language = job.config.get("language", "en")
        profile = job.config.get("profile", "paper")
        _chains[key] = build_chain(
            job.curation, job.dataset, engine=get_engine(job.engine), language=language, profile=profile
        )[0]
    return _chains[key]


def _write_staged(target: Path, kept: list[Record], rejects: list[Reject], meta: dict[str, Any]) -> None:
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


def _self_instruct_batch(job: BatchJob, model: Engine) -> tuple[list[Record], list[Reject], dict[str, Any]]:
    config = SelfInstructConfig.model_validate(job.config)
    generator = SelfInstructGenerator(config, model, load_seed_tasks(config.seeds, config.language), run_id=job.run_id)
    generator.add_to_pool(job.pool)
    result = generator.run_batch(job.batch, job.prompts)
    return result.kept, result.rejects, {"prompts": result.prompts, "accepted_tasks": result.accepted_tasks}


def _evol_instruct_batch(job: BatchJob, model: Engine) -> tuple[list[Record], list[Reject], dict[str, Any]]:
    generator = EvolInstructGenerator(EvolInstructConfig.model_validate(job.config), model, run_id=job.run_id)
    result = generator.run_chunk(job.batch, [Example(**item) for item in job.items])
    return result.kept, result.rejects, {"rounds": {str(k): v.as_dict() for k, v in result.rounds.items()}}


# How a Ray worker makes one batch of each generator that can run there.
RAY_BATCHES = {SELF_INSTRUCT: _self_instruct_batch, EVOL: _evol_instruct_batch}


def run_job(job: BatchJob) -> str:
    """Generate, curate and stage one batch; returns the staged folder's path."""
    target = staged_path(job.dataset, job.run_id, job.batch)
    if target.exists():
        return str(target)
    model = get_engine(job.engine)
    kept, rejects, made = RAY_BATCHES[job.generator](job, model)
    meta: dict[str, Any] = {"worker": f"{socket.gethostname()}:{os.getpid()}", **made}
    chain = _chain(job)
    try:
        curated = chain.apply(kept)
        _write_staged(target, curated.kept, [*rejects, *curated.rejects], meta)
    except BaseException:
        chain.rollback()  # the batch is not staged: its records leave the shared index
        raise
    chain.commit()
    return str(target)


@task(name="staged-batch", cache_policy=NONE, retries=2, retry_delay_seconds=[5, 30], retry_condition_fn=worth_retrying)
def stage_batch(job: BatchJob) -> str:
    """A batch on a Ray worker (see `run_job`)."""
    path = run_job(job)
    get_run_logger().info("batch %d of %s staged at %s", job.batch, job.run_id, path)
    return path


# -- on the flow ------------------------------------------------------------------------------------


def read_staged(path: str | Path) -> tuple[list[Record], list[Reject], dict[str, Any]]:
    folder = Path(path)
    kept = [Record.model_validate_json(line) for line in (folder / "kept.jsonl").read_text().splitlines() if line]
    rejects = [Reject.model_validate_json(line) for line in (folder / "rejects.jsonl").read_text().splitlines() if line]
    return kept, rejects, json.loads((folder / "meta.json").read_text())


def discard_staged(dataset: str | Path, rid: str, from_batch: int, curation: CurationConfig) -> None:
    """Remove the run's staged batches from `from_batch` on, taking their records out of the index."""
    folder = Path(dataset) / STAGING / rid
    if not folder.is_dir():
        return
    index = RedisMinHashIndex.open(dataset, curation.minhash) if curation.minhash.enabled else None
    for staged in sorted(folder.iterdir()):
        if staged.name.startswith("."):
            shutil.rmtree(staged, ignore_errors=True)
            continue
        if int(staged.name.split("-")[1]) < from_batch:
            continue
        kept, _, _ = read_staged(staged)
        if index is not None:
            with index.locked():
                index.remove([r.id for r in kept])
        shutil.rmtree(staged)
    if not any(folder.iterdir()):
        folder.rmdir()


def _submit(runner: RayRunner, job: BatchJob) -> Any:
    """Submit a batch job to the Ray task runner with the runner's resource request."""
    from prefect_ray.context import remote_options

    with remote_options(num_gpus=runner.num_gpus, num_cpus=runner.num_cpus):
        return stage_batch.submit(job)


def _commit(
    writer: DatasetWriter,
    rid: str,
    batch: int,
    path: str | Path,
    staged: tuple[list[Record], list[Reject], dict[str, Any]],
    state: dict[str, Any],
) -> None:
    """Commit a staged batch (as `read_staged` read it) with the run state `state`, counting the
    worker that made it, then remove its folder."""
    kept, rejects, meta = staged
    workers = dict(state.get("workers", {}))
    workers[meta["worker"]] = workers.get(meta["worker"], 0) + 1
    writer.commit_batch(rid, batch, kept, rejects, state={**state, "workers": workers})
    shutil.rmtree(path)


@contextmanager
def _ray_run(
    generator: str, config: BaseModel, rid: str, engine: EngineConfig, dataset: DatasetConfig, curation: CurationConfig
) -> Iterator[DatasetWriter]:
    """The dataset's writer (holding its lock) for run `rid` of `generator` on Ray, the run started
    or resumed in the manifest. A curation with an ability mixture is refused: each worker's chain
    counts only its own records, so workers together would overshoot its targets."""
    if curation.mixture:
        raise ValueError("an ability mixture needs the local runner (each Ray worker would count only its own records)")
    with DatasetWriter(dataset.path, shard_rows=dataset.shard_rows, wait=dataset.wait, holder=rid) as writer:
        start_run(writer, rid, generator, config, engine, engine.model or EMBEDDED_MODEL_NAME, curation)
        yield writer


def run_self_instruct_on_ray(
    config: SelfInstructConfig,
    engine: EngineConfig,
    dataset: DatasetConfig,
    curation: CurationConfig,
    runner: RayRunner,
) -> dict[str, Any]:
    """Self-Instruct with up to `runner.workers` batches in flight on Ray; returns the run summary."""
    seeds = load_seed_tasks(config.seeds, config.language)
    rid = self_instruct_run_id(config, engine, seeds)
    with _ray_run(SELF_INSTRUCT, config, rid, engine, dataset, curation) as writer:
        pool = accepted_tasks(dataset.path, rid)
        progress = Progress(f"Self-Instruct on Ray into {dataset.path}: records kept of {config.num_records}")
        futures: dict[int, Any] = {}
        # No budget unless the config sets one; a stall (as in `TargetJob`) ends the run early.
        budget = config.max_batches if config.max_batches is not None else float("inf")
        empty = 0
        while True:
            run = writer.manifest.runs[rid]
            progress.update(run.kept / config.num_records)
            if run.kept >= config.num_records or run.batches_done >= budget or empty >= STALL_BATCHES:
                break
            # Keep the pipeline full: batches after the last submitted one, up to `workers` ahead.
            nxt = max([run.batches_done - 1, *futures]) + 1
            while len(futures) < runner.workers and nxt < budget:
                prompts = prompts_for_batch(config, run.kept, run.state.get("prompts_sent", 0))
                job = BatchJob(
                    generator="self_instruct", config=config.model_dump(mode="json"), engine=engine,
                    curation=curation, dataset=str(dataset.path), run_id=rid, batch=nxt,
                    prompts=prompts, pool=pool,
                )  # fmt: skip
                futures[nxt] = _submit(runner, job)
                nxt += 1
            batch = run.batches_done
            path = futures.pop(batch).result()
            sent = run.state.get("prompts_sent", 0)
            staged = read_staged(path)
            meta = staged[2]
            _commit(writer, rid, batch, path, staged, {**run.state, "prompts_sent": sent + meta["prompts"]})
            empty = empty + 1 if writer.manifest.runs[rid].kept == run.kept else 0
            pool = [*pool, *meta["accepted_tasks"]]
        for future in futures.values():
            future.wait()
        discard_staged(dataset.path, rid, writer.manifest.runs[rid].batches_done, curation)
        writer.finish_run(rid)
        return run_summary(
            writer, rid, dataset.path, reached_target=writer.manifest.runs[rid].kept >= config.num_records
        )


def run_evol_instruct_on_ray(
    config: EvolInstructConfig,
    engine: EngineConfig,
    dataset: DatasetConfig,
    curation: CurationConfig,
    runner: RayRunner,
) -> dict[str, Any]:
    """Evol-Instruct with up to `runner.workers` chunks in flight on Ray; returns the run summary."""
    config = effective_config(config, dataset)
    items = load_instructions(config.source)[: config.limit]
    rid = evol_run_id(config, engine, items)
    chunks = [items[i : i + config.chunk_size] for i in range(0, len(items), config.chunk_size)]
    with _ray_run(EVOL, config, rid, engine, dataset, curation) as writer:
        progress = Progress(f"Evol-Instruct on Ray into {dataset.path}: chunks of {config.chunk_size} done")
        first = writer.manifest.runs[rid].batches_done
        futures: dict[int, Any] = {}
        upcoming = iter(range(first, len(chunks)))
        for chunk in range(first, len(chunks)):
            for nxt in upcoming:
                futures[nxt] = _submit(
                    runner,
                    BatchJob(
                        generator="evol_instruct", config=config.model_dump(mode="json"), engine=engine,
                        curation=curation, dataset=str(dataset.path), run_id=rid, batch=nxt,
                        items=[asdict(i) for i in chunks[nxt]],
                    )
                )  # fmt: skip
                if len(futures) >= runner.workers:
                    break
            path = futures.pop(chunk).result()
            state = writer.manifest.runs[rid].state
            staged = read_staged(path)
            rounds = merge_rounds(state.get("rounds", {}), staged[2]["rounds"])
            _commit(writer, rid, chunk, path, staged, {**state, "rounds": rounds})
            progress.update((chunk + 1) / max(1, len(chunks)))
        writer.finish_run(rid)
        summary = run_summary(writer, rid, dataset.path, reached_target=True)
        summary["rounds"] = writer.manifest.runs[rid].state.get("rounds", {})
        summary["source_instructions"] = len(items)
        return summary
