"""The preference-pairs flow: one Prefect task per chunk of source instructions.

A chunk is the unit of commit and resume: re-running the same command skips committed chunks, so
no instruction is sampled, graded or written twice. Responses are seeded by the run seed, the
source record's id and the response's number, so a resumed chunk makes what an uninterrupted run
would have made.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Unpack

from synth.engines import Engine, get_engine
from synth.flows.job_kinds import ChunkedJob, ChunkedSummary, ChunkWords
from synth.flows.jobs import Batch, Maker, Spec
from synth.flows.run import RunOptions, generator_flow, run_job
from synth.generators.preferences import GENERATOR, TEMPLATES, PreferencesGenerator, check_inputs
from synth.generators.sources import items_digest, load_instructions
from synth.schemas import DatasetConfig, EngineConfig, Example, run_id
from synth.schemas.preferences import PreferencesConfig


def preferences_run_id(config: PreferencesConfig, engine: EngineConfig, items: list[Example]) -> str:
    """A hash of the config, the source's content (not its path), the templates and the models."""
    digest = items_digest(items, outputs=False)
    templates = TEMPLATES.hashes(config.language)
    return run_id(GENERATOR, config.identity(), digest, templates, engine.kind, engine.model)


class PreferencesSummary(ChunkedSummary):
    """A preference-pairs run's summary: the instructions read and paired (and, with the position check, checked and flipped)."""

    pairs: dict[str, int]


@dataclass
class PreferencesJob(ChunkedJob[PreferencesGenerator, dict[str, int], PreferencesSummary]):
    """The preference pairs' part of a run (see `synth.flows.jobs`): one batch per chunk of source
    instructions; the counts of instructions read and paired accumulate in the run's state (`pairs`)."""

    config: PreferencesConfig
    writers: Sequence[Engine] | None = None  # live response engines (tests); None: from the config
    generator: ClassVar[str] = GENERATOR
    live: ClassVar[tuple[str, str] | None] = ("writers", "response_engines")
    counts_key: ClassVar[str | None] = "pairs"
    words: ClassVar[ChunkWords] = ChunkWords("Preference pairs", "instructions", "paired")

    def build(self, maker: Maker) -> PreferencesGenerator:
        writers = self.writers
        if writers is None:
            writers = [get_engine(e) for e in self.config.response_engines]
        parents = Path(self.config.source).is_dir()
        return PreferencesGenerator(self.config, maker.engine, self.run_id, writers=writers, parents=parents)

    def make(self, maker: Maker, spec: Spec) -> Batch[dict[str, dict[str, int]]]:
        result = self.gen_for(maker).run_chunk(spec.batch, spec.data)
        counts = {"instructions": result.instructions, "paired": result.paired}
        if self.config.position_check:
            counts |= {"position_checked": result.position_checked, "flipped": result.flipped}
        return self.counted(result, counts)


def run_preferences(
    config: PreferencesConfig,
    engine: EngineConfig,
    dataset: DatasetConfig,
    *,
    writers: Sequence[Engine] | None = None,
    **options: Unpack[RunOptions],
) -> PreferencesSummary:
    """Run (or resume) preference pairs from `config.source` into `dataset` (see `RunOptions`;
    `writers`: live engines that write responses beside the run's, instead of the config's
    `response_engines`); returns a summary with the counts of instructions read and paired."""
    check_inputs(config, dataset.path)
    items = load_instructions(config.source)[: config.limit]
    rid = preferences_run_id(config, engine, items)
    return run_job(PreferencesJob(config, items, rid, writers), engine, dataset, **options)


preferences_flow = generator_flow("preferences", PreferencesConfig, run_preferences, "Preference pairs")
