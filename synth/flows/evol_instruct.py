"""The Evol-Instruct flow: one Prefect task per chunk of source instructions, all rounds inside it.

A chunk is the unit of commit and resume: re-running the same command skips committed chunks, so
a chunk's round-0 records and evolutions are written once. The per-round funnel (in, evolved,
eliminated by reason; round 0 is the source examples) accumulates in the run's manifest entry.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from synth.engines import Engine, get_engine
from synth.filters.base import FilterChain
from synth.filters.dedup import MinHashIndex
from synth.filters.redis_index import RedisMinHashIndex
from synth.flows.common import Progress, commit_curated, run_summary, start_run, worth_retrying
from synth.flows.curation import build_chain
from synth.generators.evol_instruct import GENERATOR, OPERATIONS, EvolInstructGenerator
from synth.generators.sources import SourceItem, load_instructions
from synth.generators.templates import load_template
from synth.schemas import DatasetConfig, EngineConfig, EvolInstructConfig, VLLMEngineConfig, run_id
from synth.schemas.curation import CurationConfig
from synth.shards import DatasetWriter


def effective_config(config: EvolInstructConfig, dataset: DatasetConfig) -> EvolInstructConfig:
    """`config` as it runs into `dataset`: a source that is the dataset itself is already in it,
    so its examples are not written again as round 0."""
    if config.include_source and Path(config.source).resolve() == Path(dataset.path).resolve():
        return config.model_copy(update={"include_source": False})
    return config


def evol_run_id(config: EvolInstructConfig, engine: EngineConfig, items: list[SourceItem]) -> str:
    source_hash = hashlib.sha256(
        "\n".join(f"{i.id}\x1f{i.instruction}\x1f{i.input}\x1f{i.output}" for i in items).encode()
    ).hexdigest()
    templates = [load_template(f"evol_{op}").hash for op in OPERATIONS] + [
        load_template("evol_equality").hash,
        load_template("evol_response").hash,
    ]
    return run_id(GENERATOR, config.identity(), source_hash, templates, engine.kind, engine.model)


def merge_rounds(total: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Add one chunk's per-round funnel (round -> `RoundFunnel.as_dict()`) to the run's running
    totals (JSON keys are strings)."""
    merged = {
        k: {"in": v["in"], "evolved": v["evolved"], "eliminated": dict(v["eliminated"])} for k, v in total.items()
    }
    for rnd, funnel in new.items():
        entry = merged.setdefault(str(rnd), {"in": 0, "evolved": 0, "eliminated": {}})
        entry["in"] += funnel["in"]
        entry["evolved"] += funnel["evolved"]
        for reason, n in funnel["eliminated"].items():
            entry["eliminated"][reason] = entry["eliminated"].get(reason, 0) + n
    return merged


@task(
    name="evol-instruct-chunk",
    cache_policy=NONE,
    retries=2,
    retry_delay_seconds=[5, 30],
    retry_condition_fn=worth_retrying,
)
def evolve_chunk(
    generator: EvolInstructGenerator,
    writer: DatasetWriter,
    curation: tuple[FilterChain, MinHashIndex | RedisMinHashIndex | None],
    rid: str,
    chunk: int,
    items: list[SourceItem],
) -> list[str]:
    """Evolve one chunk through every round, curate it and commit it; returns the shards' paths."""
    result = generator.run_chunk(chunk, items)
    funnels = {str(k): f.as_dict() for k, f in result.rounds.items()}
    state = {"rounds": merge_rounds(writer.manifest.runs[rid].state.get("rounds", {}), funnels)}
    committed = commit_curated(writer, rid, chunk, *curation, result.kept, result.rejects, state=state)
    get_run_logger().info(
        "chunk %d: %d instructions, %d evolutions kept, %d rejected",
        chunk,
        len(items),
        committed.kept,
        committed.rejected,
    )
    return committed.paths


def run_evol_instruct(
    config: EvolInstructConfig,
    engine: EngineConfig,
    dataset: DatasetConfig,
    *,
    curation: CurationConfig | None = None,
    model: Engine | None = None,
    batch_retries: int = 2,
) -> dict[str, Any]:
    """Run (or resume) Evol-Instruct from `config.source` into `dataset`; returns a summary."""
    config = effective_config(config, dataset)
    items = load_instructions(config.source)[: config.limit]
    rid = evol_run_id(config, engine, items)
    chunks = [items[i : i + config.chunk_size] for i in range(0, len(items), config.chunk_size)]
    step = evolve_chunk.with_options(retries=batch_retries)
    with DatasetWriter(dataset.path, shard_rows=dataset.shard_rows, wait=dataset.wait, holder=rid) as writer:
        model = model or get_engine(engine)
        start_run(writer, rid, GENERATOR, config, engine, model.model_name)
        generator = EvolInstructGenerator(config, model, run_id=rid)
        curation_chain = build_chain(curation or CurationConfig(), dataset.path, engine=model)
        progress = Progress(f"Evol-Instruct into {dataset.path}: chunks of {config.chunk_size} instructions done")
        for chunk in range(writer.manifest.runs[rid].batches_done, len(chunks)):
            progress.update(chunk / max(1, len(chunks)))
            step(generator, writer, curation_chain, rid, chunk, chunks[chunk])
        progress.update(1.0)
        writer.finish_run(rid)
        summary = run_summary(writer, rid, dataset.path, reached_target=True)
        summary["rounds"] = writer.manifest.runs[rid].state.get("rounds", {})
        summary["source_instructions"] = len(items)
        return summary


@flow(name="evol-instruct", log_prints=True)
def evol_instruct_flow(
    config: EvolInstructConfig,
    dataset: DatasetConfig,
    engine: EngineConfig | None = None,
    curation: CurationConfig | None = None,
) -> dict[str, Any]:
    """Evol-Instruct into a dataset directory, on the configured engine (the embedded model by default)."""
    return run_evol_instruct(config, engine or VLLMEngineConfig(), dataset, curation=curation)
