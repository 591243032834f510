"""Backtranslation's few-shot run: documents are streamed into segment chunks, one Prefect task per
chunk. (Its Prefect flow, which runs this or the self-training loop, is in `synth.flows.self_training`.)

Round 1 reads the corpus once, committing a chunk whenever `chunk_size` usable segments are in
hand (with the documents and segments dropped on the way, as rejects). Each later round streams the
corpus again and takes only the segments no earlier round kept, with the few-shot pool grown by the
pairs earlier rounds curated. A run resumes at its next uncommitted chunk: earlier chunks are
re-segmented (cheap) but never sent to the model again.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Unpack

import polars as pl
from typing_extensions import TypedDict

from synth.engines import Engine, second_engine
from synth.flows.common import Committed
from synth.flows.jobs import Batch, Built, Maker, RunContext, Spec
from synth.flows.run import RunOptions, run_job
from synth.generators.backtranslation import (
    GENERATOR,
    TEMPLATES,
    BacktranslationGenerator,
    ChunkResult,
    document_reject,
    segment_reject,
)
from synth.generators.documents import Segment, Skipped
from synth.generators.seed_pairs import SeedPairs, SeedsReport, load_seed_pairs
from synth.generators.segments import corpus_segments
from synth.schemas import BacktranslationConfig, DatasetConfig, EngineConfig, Reject, run_id
from synth.schemas.runs import RunState, RunSummary, state_of
from synth.shards import scan


class ChunkCounts(TypedDict):
    """What a chunk read of the corpus (round 1 only): documents, documents skipped by reason,
    segments, segments dropped by reason."""

    documents: int
    documents_skipped: dict[str, int]
    segments: int
    segments_dropped: dict[str, int]


class ChunkStats(TypedDict):
    """A chunk's grading figures: pairs graded, kept, unparseable, and graded per score."""

    graded: int
    kept: int
    unparseable: int
    scores: dict[str, int]


class Funnel(TypedDict):
    """A run's funnel: the seed pairs, what the corpus held and dropped, and each round's
    grading figures (by round number, as a JSON key)."""

    seeds: SeedsReport
    documents: int
    documents_skipped: dict[str, int]
    segments: int
    segments_dropped: dict[str, int]
    rounds: dict[str, ChunkStats]


class Position(TypedDict):
    """Where a run goes on: the round, and its first chunk not committed."""

    round: int
    chunk: int


START: Position = {"round": 1, "chunk": 0}  # where a run that committed nothing goes on


class BacktranslationDelta(TypedDict):
    round: int
    chunk: int
    counts: ChunkCounts
    stats: ChunkStats


class BacktranslationState(RunState, total=False):
    funnel: Funnel
    position: Position


class BacktranslationSummary(RunSummary):
    funnel: Funnel


def _no_counts() -> ChunkCounts:
    return {"documents": 0, "documents_skipped": {}, "segments": 0, "segments_dropped": {}}


def chunks(
    config: BacktranslationConfig, rid: str, rnd: int, done: set[str]
) -> Iterator[tuple[list[Segment], list[Reject], ChunkCounts]]:
    """(segments, rejects met on the way, counts) per chunk of round `rnd`, skipping segments in `done`.

    Only round 1 reports dropped documents and segments (later rounds see the same ones again).
    """
    first = rnd == 1
    segments: list[Segment] = []
    rejects: list[Reject] = []
    counts = _no_counts()

    def drop(bucket: Literal["documents_skipped", "segments_dropped"], reason: str) -> None:
        counts[bucket][reason] = counts[bucket].get(reason, 0) + 1

    def flush() -> tuple[list[Segment], list[Reject], ChunkCounts]:
        nonlocal segments, rejects, counts
        out = (segments, rejects, counts)
        segments, rejects, counts = [], [], _no_counts()
        return out

    for item in corpus_segments(config):
        if isinstance(item, Segment):
            if first:
                counts["segments"] += 1
            if item.key not in done:
                segments.append(item)
                if len(segments) >= config.chunk_size:
                    yield flush()
        elif not first:
            continue  # documents and drops are reported once, in round 1
        elif isinstance(item, str):
            counts["documents"] += 1
        elif isinstance(item, Skipped):
            drop("documents_skipped", item.reason)
            rejects.append(document_reject(item.doc, item.reason, rid, config.seed))
        else:
            drop("segments_dropped", item[1])
            rejects.append(segment_reject(item[0], item[1], rid, config.seed))
    if segments or rejects:
        yield flush()


def chunk_stats(result: ChunkResult) -> ChunkStats:
    """A chunk's grading figures as data (what its batch adds to the run's funnel)."""
    stats = result.stats
    scores = {str(score): n for score, n in sorted(stats.scores.items())}
    return {"graded": stats.graded, "kept": stats.kept, "unparseable": stats.unparseable, "scores": scores}


def _add_reasons(into: dict[str, int], more: dict[str, int]) -> None:
    for reason, n in more.items():
        into[reason] = into.get(reason, 0) + n


def _copy_stats(stats: ChunkStats) -> ChunkStats:
    return {**stats, "scores": dict(stats["scores"])}


def merge_funnel(
    total: Mapping[str, Any], counts: ChunkCounts, rnd: int, stats: ChunkStats, seeds: SeedsReport
) -> Funnel:
    """Add one chunk's counts and grading figures (`chunk_stats`) to the run's funnel: documents,
    segments, graded, kept by score; and the seed pairs (`SeedPairs.report`: used, skipped by
    reason) of the run."""
    funnel: Funnel = {
        "seeds": seeds,
        "documents": total.get("documents", 0) + counts["documents"],
        "documents_skipped": dict(total.get("documents_skipped", {})),
        "segments": total.get("segments", 0) + counts["segments"],
        "segments_dropped": dict(total.get("segments_dropped", {})),
        "rounds": {k: _copy_stats(v) for k, v in total.get("rounds", {}).items()},
    }
    _add_reasons(funnel["documents_skipped"], counts["documents_skipped"])
    _add_reasons(funnel["segments_dropped"], counts["segments_dropped"])
    r = funnel["rounds"].setdefault(str(rnd), {"graded": 0, "kept": 0, "unparseable": 0, "scores": {}})
    r["graded"] += stats["graded"]
    r["kept"] += stats["kept"]
    r["unparseable"] += stats["unparseable"]
    for score, n in stats["scores"].items():
        r["scores"][score] = r["scores"].get(score, 0) + n
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


@dataclass
class BacktranslationJob(Built[BacktranslationGenerator]):
    """Backtranslation's part of a run (see `synth.flows.jobs`): rounds over the corpus, one batch
    per chunk of segments; each round's few-shot pool holds the seeds and what earlier rounds kept
    (planned with the round's first chunk, once every earlier round is committed, and sent with
    each of the round's batches)."""

    config: BacktranslationConfig
    seeds: SeedPairs
    run_id: str
    backward_engine: EngineConfig | None = None
    backward_model: Engine | None = None
    trained_backward: bool = False  # the backward model was fine-tuned (self-training): no few-shot prompt
    generator: ClassVar[str] = GENERATOR
    state_type: ClassVar[Any] = BacktranslationState
    live: ClassVar[tuple[str, str] | None] = ("backward_model", "backward_engine")

    def build(self, maker: Maker) -> BacktranslationGenerator:
        backward = second_engine(self.backward_model, self.backward_engine)
        return BacktranslationGenerator(
            self.config, maker.engine, self.seeds.pairs, self.run_id, backward, self.trained_backward
        )

    def open(self, run: RunContext) -> str:
        return f"Backtranslation of {self.config.docs} into {run.dataset.path}: rounds done of {self.config.rounds}"

    def plan(self, run: RunContext) -> Iterator[Spec]:
        config, path = self.config, run.dataset.path
        position = state_of(run.info, BacktranslationState).get("position", START)
        for rnd in range(position["round"], config.rounds + 1):
            earlier = curated(path, self.run_id, before_round=rnd)
            pool = [*self.seeds.pairs, *earlier.select("instruction", "output").iter_rows()]
            skip = position["chunk"] if rnd == position["round"] else 0
            for index, chunk in enumerate(chunks(config, self.run_id, rnd, _keys(earlier))):
                if index >= skip:
                    yield Spec(run.info.batches_done, (rnd, index, *chunk, pool))

    def make(self, maker: Maker, spec: Spec) -> Batch[BacktranslationDelta]:
        rnd, index, segments, rejects, counts, pool = spec.data
        gen = self.gen_for(maker)
        gen.pool = pool  # the round's pool (the same list for every chunk of a round)
        result = gen.run_chunk(spec.batch, rnd, segments) if segments else ChunkResult()
        delta: BacktranslationDelta = {"round": rnd, "chunk": index, "counts": counts, "stats": chunk_stats(result)}
        return Batch(result.kept, rejects + result.rejects, delta)

    def fold(self, state: BacktranslationState, delta: BacktranslationDelta) -> BacktranslationState:
        funnel = merge_funnel(
            state.get("funnel", {}), delta["counts"], delta["round"], delta["stats"], self.seeds.report()
        )
        return {**state, "funnel": funnel, "position": {"round": delta["round"], "chunk": delta["chunk"] + 1}}

    def committed(self, run: RunContext, spec: Spec, batch: Batch[BacktranslationDelta], result: Committed) -> str:
        rnd, index, segments = spec.data[:3]
        return f"round {rnd} chunk {index}: {len(segments)} segments (scores {batch.delta['stats']['scores']})"

    def progress(self, run: RunContext) -> float:
        position = state_of(run.info, BacktranslationState).get("position", START)
        return (position["round"] - 1) / self.config.rounds

    def finish(self, run: RunContext, summary: RunSummary) -> BacktranslationSummary:
        seeds = self.seeds.report()
        funnel = state_of(run.info, BacktranslationState).get("funnel")
        if funnel is None:  # no chunk was committed
            return {**summary, "funnel": {"seeds": seeds, **_no_counts(), "rounds": {}}}
        return {**summary, "funnel": {**funnel, "seeds": seeds}}


def backtranslation_run_id(
    config: BacktranslationConfig, engine: EngineConfig, backward: EngineConfig | None, seeds: SeedPairs
) -> str:
    """A hash of the config, the documents' path, the seed pairs' content (not their file's path),
    the templates, the engine and the models."""
    templates = TEMPLATES.hashes(config.language)
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
    backward_model: Engine | None = None,
    **options: Unpack[RunOptions],
) -> BacktranslationSummary:
    """Run (or resume) backtranslation over `config.docs` into `dataset` (see `RunOptions`; the
    backward step may have its own engine, as a config or a live one); returns a summary, whose
    funnel counts the seed pairs used and skipped (`funnel["seeds"]`)."""
    seeds = load_seed_pairs(config.seeds, config.language)
    rid = backtranslation_run_id(config, engine, backward_engine, seeds)
    return run_job(BacktranslationJob(config, seeds, rid, backward_engine, backward_model), engine, dataset, **options)
