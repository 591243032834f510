"""The Self-Instruct flow: one Prefect task per batch, each committed to the dataset before the next.

A run's id is a hash of what defines its output (generator config without the target size, seed
tasks, prompt templates, engine and model). Re-running the same command resumes that run from its
last committed batch; raising `--num` extends it; any other change starts a new run beside it.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import polars as pl
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from synth.engines import Engine, get_engine
from synth.filters.base import FilterChain
from synth.filters.dedup import MinHashIndex
from synth.filters.redis_index import RedisMinHashIndex
from synth.flows.common import Progress, commit_curated, run_summary, start_run, worth_retrying
from synth.flows.curation import build_chain
from synth.generators.seeds import load_seed_tasks
from synth.generators.self_instruct import GENERATOR, SelfInstructGenerator
from synth.generators.templates import load_template
from synth.schemas import DatasetConfig, EngineConfig, SeedTask, SelfInstructConfig, VLLMEngineConfig, run_id
from synth.schemas.curation import CurationConfig
from synth.shards import DatasetWriter, scan

_TEMPLATES = (
    "self_instruct_tasks",
    "self_instruct_classify",
    "self_instruct_open_ended",
    "self_instruct_instances_input_first",
    "self_instruct_instances_output_first",
    "self_instruct_demos_input_first",
    "self_instruct_demos_output_first",
)


def self_instruct_run_id(config: SelfInstructConfig, engine: EngineConfig, seeds: list[SeedTask]) -> str:
    seed_hash = hashlib.sha256("\n".join(s.model_dump_json() for s in seeds).encode()).hexdigest()
    templates = [load_template(name).hash for name in _TEMPLATES]
    return run_id(GENERATOR, config.identity(), seed_hash, templates, engine.kind, engine.model)


def accepted_tasks(path: str | Path, rid: str) -> list[str]:
    """Tasks that earlier batches of run `rid` admitted to the pool, in batch then text order.

    Every admitted task ends up either in a kept record or in a reject of the classification or
    instance stage, so the pool can be rebuilt from the shards alone.
    """
    kept = scan(path, "kept").filter(pl.col("run_id") == rid).select("batch", "instruction")
    # Rejects of the classification and instance stages, and records the curation chain dropped
    # (they have an output; the generator's own task-level rejects do not).
    late = (
        scan(path, "rejects")
        .filter(
            (pl.col("run_id") == rid)
            & (pl.col("stage").is_in(["classification", "instance"]) | (pl.col("output") != ""))
        )
        .select("batch", "instruction")
    )
    rows = pl.concat([kept, late]).unique().collect().rows()
    return [text for _, text in sorted(rows)]


def prompts_for_batch(config: SelfInstructConfig, kept: int, prompts_sent: int) -> int:
    """How many prompts the next batch sends: the full batch, or, near the target, about what the
    run's yield so far says is needed (with a margin), so the last batch does not overshoot much.
    Never below a quarter batch: each batch costs three engine calls whatever its size."""
    remaining = config.num_records - kept
    if kept == 0 or prompts_sent == 0:
        return config.prompts_per_batch
    per_prompt = kept / prompts_sent
    floor = max(1, math.ceil(config.prompts_per_batch / 4))
    return max(floor, min(config.prompts_per_batch, math.ceil(1.25 * remaining / per_prompt)))


@task(
    name="self-instruct-batch",
    cache_policy=NONE,
    retries=2,
    retry_delay_seconds=[5, 30],
    retry_condition_fn=worth_retrying,
)
def generate_batch(
    generator: SelfInstructGenerator,
    writer: DatasetWriter,
    curation: tuple[FilterChain, MinHashIndex | RedisMinHashIndex | None],
    rid: str,
    batch: int,
    prompts: int,
) -> list[str]:
    """Generate one batch, curate it and commit it; returns the paths of the shards written."""
    result = generator.run_batch(batch, prompts)
    run = writer.manifest.runs[rid]
    state = {"prompts_sent": run.state.get("prompts_sent", 0) + result.prompts}
    committed = commit_curated(writer, rid, batch, *curation, result.kept, result.rejects, state=state)
    generator.accept(result.accepted_tasks)
    run = writer.manifest.runs[rid]
    get_run_logger().info(
        "batch %d: %d prompts, %d new tasks, %d records kept, %d rejected (run total %d/%d kept)",
        batch, prompts, len(result.accepted_tasks), committed.kept, committed.rejected, run.kept, generator.config.num_records,
    )  # fmt: skip
    return committed.paths


def run_self_instruct(
    config: SelfInstructConfig,
    engine: EngineConfig,
    dataset: DatasetConfig,
    *,
    curation: CurationConfig | None = None,
    model: Engine | None = None,
    batch_retries: int = 2,
) -> dict[str, Any]:
    """Run (or resume) Self-Instruct into `dataset`, curating each batch before it is written
    (`curation`, default: heuristics, exact and near dedup); returns a summary of the run.

    `model` overrides the engine built from `engine` (tests pass a scripted one; `engine` still
    names the model in the run id). A batch whose engine calls fail is retried `batch_retries`
    times with backoff; it changes nothing until it commits, so a retry starts clean.
    """
    seeds = load_seed_tasks(config.seeds)
    rid = self_instruct_run_id(config, engine, seeds)
    run_batch = generate_batch.with_options(retries=batch_retries)
    with DatasetWriter(dataset.path, shard_rows=dataset.shard_rows, wait=dataset.wait, holder=rid) as writer:
        model = model or get_engine(engine)
        start_run(writer, rid, GENERATOR, config, engine, model.model_name)
        generator = SelfInstructGenerator(config, model, seeds, run_id=rid)
        chain = build_chain(curation or CurationConfig(), dataset.path, engine=model)
        generator.accept(accepted_tasks(dataset.path, rid))
        progress = Progress(f"Self-Instruct into {dataset.path}: records kept of {config.num_records}")
        while True:
            run = writer.manifest.runs[rid]
            progress.update(run.kept / config.num_records)
            if run.kept >= config.num_records or run.batches_done >= config.max_batches:
                break
            prompts = prompts_for_batch(config, run.kept, run.state.get("prompts_sent", 0))
            run_batch(generator, writer, chain, rid, run.batches_done, prompts)
        writer.finish_run(rid)
        return run_summary(
            writer, rid, dataset.path, reached_target=writer.manifest.runs[rid].kept >= config.num_records
        )


@flow(name="self-instruct", log_prints=True)
def self_instruct_flow(
    config: SelfInstructConfig,
    dataset: DatasetConfig,
    engine: EngineConfig | None = None,
    curation: CurationConfig | None = None,
) -> dict[str, Any]:
    """Self-Instruct into a dataset directory, on the configured engine (the embedded model by default)."""
    return run_self_instruct(config, engine or VLLMEngineConfig(), dataset, curation=curation)
