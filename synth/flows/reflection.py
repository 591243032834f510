"""The reflection flow (`synth recycle`): one Prefect task per chunk of source pairs.

A chunk is the unit of commit and resume: re-running the same command skips committed chunks, so
no pair is reflected on, scored or written twice. The teacher samples greedily with seeds from the
run seed and the pair's id, so a resumed chunk makes what an uninterrupted run would have made.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Unpack

from synth.engines import Engine
from synth.flows.job_kinds import ChunkedJob, ChunkedSummary, ChunkWords
from synth.flows.jobs import Batch, Maker, Spec
from synth.flows.run import RunOptions, generator_flow, run_job
from synth.generators.reflection import GENERATOR, TEMPLATES, ReflectionGenerator, check_inputs
from synth.generators.sources import items_digest, load_instructions
from synth.schemas import DatasetConfig, EngineConfig, Example, run_id
from synth.schemas.reflection import ReflectionConfig


def reflection_run_id(config: ReflectionConfig, engine: EngineConfig, items: list[Example]) -> str:
    """A hash of the config, the source's content (not its path), the templates and the models."""
    templates = TEMPLATES.hashes(config.language)
    return run_id(GENERATOR, config.identity(), items_digest(items), templates, engine.kind, engine.model)


class ReflectionSummary(ChunkedSummary):
    """A Reflection-tuning run's summary: the counts of pairs read and variants written."""

    recycled: dict[str, int]


@dataclass
class ReflectionJob(ChunkedJob[ReflectionGenerator, dict[str, int], ReflectionSummary]):
    """Recycling's part of a run (see `synth.flows.jobs`): one batch per chunk of source pairs; the
    counts of pairs read and of each variant written add up in the run's state (`recycled`)."""

    config: ReflectionConfig
    student: Engine | None = None  # a live student engine (tests); None: from the config, or the teacher
    generator: ClassVar[str] = GENERATOR
    live: ClassVar[tuple[str, str] | None] = ("student", "student_engine")
    counts_key: ClassVar[str | None] = "recycled"
    words: ClassVar[ChunkWords] = ChunkWords("Recycling", "pairs", "recycled")

    def build(self, maker: Maker) -> ReflectionGenerator:
        return ReflectionGenerator(self.config, maker.engine, self.second(), self.run_id)

    def make(self, maker: Maker, spec: Spec) -> Batch[dict[str, dict[str, int]]]:
        result = self.gen_for(maker).run_chunk(spec.batch, spec.data)
        return self.counted(result, {"pairs": result.pairs, **{f"written {k}": n for k, n in result.written.items()}})


def run_reflection(
    config: ReflectionConfig,
    engine: EngineConfig,
    dataset: DatasetConfig,
    *,
    student: Engine | None = None,
    **options: Unpack[RunOptions],
) -> ReflectionSummary:
    """Recycle (or resume recycling) the pairs of `config.source` into `dataset` (see `RunOptions`;
    `student`: a live engine that scores the variants, instead of the config's `student_engine` or
    the run's engine); returns a summary with the counts of pairs read and variants written."""
    check_inputs(config, dataset.path)
    items = load_instructions(config.source)[: config.limit]
    rid = reflection_run_id(config, engine, items)
    return run_job(ReflectionJob(config, items, rid, student), engine, dataset, **options)


reflection_flow = generator_flow("reflection", ReflectionConfig, run_reflection, "Reflection (recycling)")
