"""The CodecLM flow: one Prefect task per chunk of seed instructions.

A chunk is the unit of commit and resume: each seed instruction is encoded, decoded, tailored and
filtered inside its chunk, and every request's seed comes from the run seed and the seed's id, so
a resumed chunk makes what an uninterrupted run would have made. Chunks read nothing of the
committed run, so they are independent: the next is made while the one before is committed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import ClassVar, Unpack

from synth.engines import Engine
from synth.flows.job_kinds import ChunkedJob, ChunkedSummary, ChunkWords
from synth.flows.jobs import Batch, Maker, Spec
from synth.flows.run import RunOptions, generator_flow, run_job
from synth.generators.codeclm import GENERATOR, TEMPLATES, CodeclmGenerator, check_inputs, seed_text
from synth.generators.seeds import load_seed_tasks
from synth.schemas import DatasetConfig, EngineConfig, SeedTask, run_id
from synth.schemas.codeclm import CodeclmConfig


def seeds_digest(seeds: list[SeedTask]) -> str:
    return hashlib.sha256(repr([(s.id, seed_text(s)) for s in seeds]).encode()).hexdigest()


def codeclm_run_id(config: CodeclmConfig, engine: EngineConfig, seeds: list[SeedTask]) -> str:
    """A hash of the config (the target engine's config in it), the seeds' content, the templates
    and the strong model."""
    templates = TEMPLATES.hashes(config.language)
    return run_id(GENERATOR, config.identity(), seeds_digest(seeds), templates, engine.kind, engine.model)


def load_seeds(config: CodeclmConfig) -> list[SeedTask]:
    return load_seed_tasks(config.seeds, config.language)[: config.limit]


class CodeclmSummary(ChunkedSummary):
    """A CodecLM run's summary: its chunks' counts (pairs, and records written per kind)."""

    codeclm: dict[str, int]


@dataclass
class CodeclmJob(ChunkedJob[CodeclmGenerator, dict[str, int], CodeclmSummary]):
    """CodecLM's part of a run (see `synth.flows.jobs`): one batch per chunk of seed instructions;
    the chunks' counts (seeds, metadata, instructions, records kept by rounds) add up in the run's
    state (`codeclm`)."""

    config: CodeclmConfig
    target: Engine | None = None  # a live target engine (tests); None: from the config, or the run's engine
    generator: ClassVar[str] = GENERATOR
    live: ClassVar[tuple[str, str] | None] = ("target", "target_engine")
    counts_key: ClassVar[str | None] = GENERATOR
    words: ClassVar[ChunkWords] = ChunkWords("CodecLM", "seed instructions", "pairs kept")

    def build(self, maker: Maker) -> CodeclmGenerator:
        return CodeclmGenerator(self.config, maker.engine, self.second(), self.run_id)

    def make(self, maker: Maker, spec: Spec) -> Batch[dict[str, dict[str, int]]]:
        result = self.gen_for(maker).run_chunk(spec.batch, spec.data)
        return self.counted(result, dict(result.counts))


def run_codeclm(
    config: CodeclmConfig,
    engine: EngineConfig,
    dataset: DatasetConfig,
    *,
    target: Engine | None = None,
    **options: Unpack[RunOptions],
) -> CodeclmSummary:
    """Run (or resume) CodecLM from the seed instructions into `dataset` (see `RunOptions`; the run's
    engine is the strong model; `target`: a live target engine instead of the config's
    `target_engine` or the run's engine); returns a summary with the chunks' counts."""
    check_inputs(config, dataset.path)
    seeds = load_seeds(config)
    rid = codeclm_run_id(config, engine, seeds)
    return run_job(CodeclmJob(config, seeds, rid, target), engine, dataset, **options)


codeclm_flow = generator_flow("codeclm", CodeclmConfig, run_codeclm, "CodecLM")
