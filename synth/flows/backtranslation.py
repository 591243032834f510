"""The backtranslation flow: documents are streamed into segment chunks, one Prefect task per chunk.

Round 1 reads the corpus once, committing a chunk whenever `chunk_size` usable segments are in
hand (with the documents and segments dropped on the way, as rejects). Each later round streams the
corpus again and takes only the segments no earlier round kept, with the few-shot pool grown by the
pairs earlier rounds curated. A run resumes at its next uncommitted chunk: earlier chunks are
re-segmented (cheap) but never sent to the model again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from synth.engines import Engine, get_engine
from synth.filters.base import FilterChain
from synth.filters.dedup import MinHashIndex
from synth.filters.redis_index import RedisMinHashIndex
from synth.flows.common import commit_curated, run_summary, start_run, worth_retrying
from synth.flows.curation import build_chain
from synth.generators.backtranslation import (
    GENERATOR,
    BacktranslationGenerator,
    ChunkResult,
    document_reject,
    segment_reject,
)
from synth.generators.documents import Segment, Skipped, read_documents, segment
from synth.generators.seed_pairs import SeedPairs, load_seed_pairs
from synth.generators.templates import load_template
from synth.schemas import BacktranslationConfig, DatasetConfig, EngineConfig, Reject, VLLMEngineConfig, run_id
from synth.schemas.curation import CurationConfig
from synth.shards import DatasetWriter, scan


def chunks(
    config: BacktranslationConfig, rid: str, rnd: int, done: set[str]
) -> Iterator[tuple[list[Segment], list[Reject], dict]]:
    """(segments, rejects met on the way, counts) per chunk of round `rnd`, skipping segments in `done`.

    Only round 1 reports dropped documents and segments (later rounds see the same ones again).
    """
    first = rnd == 1
    segments: list[Segment] = []
    rejects: list[Reject] = []
    counts: dict = {"documents": 0, "documents_skipped": {}, "segments": 0, "segments_dropped": {}}
    taken = 0
    seen_text: set[str] = set()

    def drop(bucket: str, reason: str) -> None:
        counts[bucket][reason] = counts[bucket].get(reason, 0) + 1

    def flush() -> tuple[list[Segment], list[Reject], dict]:
        nonlocal segments, rejects, counts
        out = (segments, rejects, counts)
        segments, rejects = [], []
        counts = {"documents": 0, "documents_skipped": {}, "segments": 0, "segments_dropped": {}}
        return out

    for item in read_documents(config.docs, config.text_field):
        if config.max_segments is not None and taken >= config.max_segments:
            break
        if isinstance(item, Skipped):
            if first:
                drop("documents_skipped", item.reason)
                rejects.append(document_reject(item.doc, item.reason, rid, config.seed))
            continue
        name, _, blocks = item
        if first:
            counts["documents"] += 1
        try:
            for seg in segment(name, blocks, config):
                if isinstance(seg, tuple):
                    if first:
                        drop("segments_dropped", seg[1])
                        rejects.append(segment_reject(seg[0], seg[1], rid, config.seed))
                    continue
                digest = hashlib.sha256(" ".join(seg.text.split()).lower().encode()).hexdigest()
                if digest in seen_text:
                    if first:
                        drop("segments_dropped", "exact duplicate")
                        rejects.append(segment_reject(seg, "exact duplicate", rid, config.seed))
                    continue
                seen_text.add(digest)
                if config.max_segments is not None and taken >= config.max_segments:
                    break
                taken += 1
                if first:
                    counts["segments"] += 1
                if seg.key in done:
                    continue
                segments.append(seg)
                if len(segments) >= config.chunk_size:
                    yield flush()
        except UnicodeDecodeError:
            if first:
                drop("documents_skipped", "not UTF-8 text")
                rejects.append(document_reject(name, "not UTF-8 text", rid, config.seed))
    if segments or rejects:
        yield flush()


def merge_funnel(total: dict, counts: dict, rnd: int, result: ChunkResult, seeds: dict | None = None) -> dict:
    """Add one chunk's counts to the run's funnel: documents, segments, graded, kept by score; and
    the seed pairs (`SeedPairs.report`: used, skipped by reason) of the run."""
    funnel = {
        "seeds": seeds if seeds is not None else total.get("seeds", {}),
        "documents": total.get("documents", 0) + counts["documents"],
        "documents_skipped": dict(total.get("documents_skipped", {})),
        "segments": total.get("segments", 0) + counts["segments"],
        "segments_dropped": dict(total.get("segments_dropped", {})),
        "rounds": {k: {**v, "scores": dict(v["scores"])} for k, v in total.get("rounds", {}).items()},
    }
    for bucket in ("documents_skipped", "segments_dropped"):
        for reason, n in counts[bucket].items():
            funnel[bucket][reason] = funnel[bucket].get(reason, 0) + n
    r = funnel["rounds"].setdefault(str(rnd), {"graded": 0, "kept": 0, "unparseable": 0, "scores": {}})
    r["graded"] += result.stats.graded
    r["kept"] += result.stats.kept
    r["unparseable"] += result.stats.unparseable
    for score, n in result.stats.scores.items():
        r["scores"][str(score)] = r["scores"].get(str(score), 0) + n
    return funnel


def curated(path: str | Path, rid: str, before_round: int | None = None) -> pl.DataFrame:
    """Kept pairs of run `rid` (of rounds before `before_round`), in a stable order."""
    frame = scan(path).filter(pl.col("run_id") == rid)
    if before_round is not None:
        frame = frame.filter(pl.col("round") < before_round)
    return (
        frame.select("instruction", "output", "source_doc", "source_start", "source_end", "round")
        .collect()
        .sort(["round", "source_doc", "source_start"])
    )


def _keys(frame: pl.DataFrame) -> set[str]:
    return {
        Segment(d, s, e, "", "").key for d, s, e in frame.select("source_doc", "source_start", "source_end").iter_rows()
    }


@task(
    name="backtranslation-chunk",
    cache_policy=NONE,
    retries=2,
    retry_delay_seconds=[5, 30],
    retry_condition_fn=worth_retrying,
)
def curate_chunk(
    generator: BacktranslationGenerator, writer: DatasetWriter, curation: tuple[FilterChain, MinHashIndex | RedisMinHashIndex | None],
    rid: str, batch: int, rnd: int, index: int, segments: list[Segment], rejects: list[Reject], counts: dict,
    seeds: dict | None = None,
) -> list[str]:  # fmt: skip
    """Augment and self-curate one chunk, run the curation chain, then commit it with the rejects
    met while reading it."""
    result = generator.run_chunk(batch, rnd, segments) if segments else ChunkResult()
    state = dict(writer.manifest.runs[rid].state)
    state["funnel"] = merge_funnel(state.get("funnel", {}), counts, rnd, result, seeds)
    state["position"] = {"round": rnd, "chunk": index + 1}
    committed = commit_curated(writer, rid, batch, *curation, result.kept, rejects + result.rejects, state=state)
    get_run_logger().info(
        "round %d chunk %d: %d segments, %d kept (scores %s), %d rejected",
        rnd, index, len(segments), committed.kept, dict(result.stats.scores), committed.rejected,
    )  # fmt: skip
    return committed.paths


def backtranslation_run_id(
    config: BacktranslationConfig, engine: EngineConfig, backward: EngineConfig | None, seeds: SeedPairs
) -> str:
    """A hash of the config, the documents' path, the seed pairs' content (not their file's path),
    the templates, the engine and the models."""
    templates = [load_template(n).hash for n in ("backtranslation_backward", "backtranslation_grade")]
    docs = Path(config.docs).resolve()
    return run_id(
        GENERATOR,
        config.identity(),
        str(docs),
        seeds.digest(),
        templates,
        engine.kind,
        engine.model,
        backward.model if backward else None,
    )


def run_backtranslation(
    config: BacktranslationConfig,
    engine: EngineConfig,
    dataset: DatasetConfig,
    *,
    backward_engine: EngineConfig | None = None,
    curation: CurationConfig | None = None,
    model: Engine | None = None,
    backward_model: Engine | None = None,
    batch_retries: int = 2,
) -> dict[str, Any]:
    """Run (or resume) backtranslation over `config.docs` into `dataset`; returns a summary, whose
    funnel counts the seed pairs used and skipped (`funnel["seeds"]`)."""
    seed_file = load_seed_pairs(config.seeds)
    rid = backtranslation_run_id(config, engine, backward_engine, seed_file)
    step = curate_chunk.with_options(retries=batch_retries)
    with DatasetWriter(dataset.path, shard_rows=dataset.shard_rows, wait=dataset.wait, holder=rid) as writer:
        model = model or get_engine(engine)
        if backward_model is None and backward_engine is not None:
            backward_model = get_engine(backward_engine)
        start_run(writer, rid, GENERATOR, config, engine, model.model_name)
        seeds = seed_file.pairs
        generator = BacktranslationGenerator(config, model, seeds, run_id=rid, backward=backward_model)
        curation_chain = build_chain(curation or CurationConfig(), dataset.path, engine=model)
        position = writer.manifest.runs[rid].state.get("position", {"round": 1, "chunk": 0})
        for rnd in range(position["round"], config.rounds + 1):
            earlier = curated(dataset.path, rid, before_round=rnd)
            generator.pool = list(seeds)
            generator.add_to_pool(list(earlier.select("instruction", "output").iter_rows()))
            skip = position["chunk"] if rnd == position["round"] else 0
            for index, (segments, rejects, counts) in enumerate(chunks(config, rid, rnd, _keys(earlier))):
                if index >= skip:
                    batch = writer.manifest.runs[rid].batches_done
                    step(
                        generator, writer, curation_chain, rid, batch, rnd, index, segments, rejects, counts,
                        seed_file.report(),
                    )  # fmt: skip
        writer.finish_run(rid)
        summary = run_summary(writer, rid, dataset.path, reached_target=True)
        summary["funnel"] = {**writer.manifest.runs[rid].state.get("funnel", {}), "seeds": seed_file.report()}
        return summary


@flow(name="backtranslation", log_prints=True)
def backtranslation_flow(
    config: BacktranslationConfig,
    dataset: DatasetConfig,
    engine: EngineConfig | None = None,
    backward_engine: EngineConfig | None = None,
    curation: CurationConfig | None = None,
) -> dict[str, Any]:
    """Backtranslation into a dataset directory, on the configured engine (the embedded model by default)."""
    return run_backtranslation(
        config, engine or VLLMEngineConfig(), dataset, backward_engine=backward_engine, curation=curation
    )
