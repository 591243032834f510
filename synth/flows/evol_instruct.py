"""The Evol-Instruct flow: one Prefect task per chunk of source instructions, all rounds inside it.

A chunk is the unit of commit and resume: re-running the same command skips committed chunks, so
a chunk's round-0 records and evolutions are written once. The per-round funnel (in, evolved,
eliminated by reason; round 0 is the source examples) accumulates in the run's manifest entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Unpack

from synth.flows.job_kinds import ChunkedJob, ChunkedSummary, ChunkWords
from synth.flows.jobs import Batch, Maker, Spec
from synth.flows.run import RunOptions, generator_flow, run_job
from synth.generators.evol_instruct import GENERATOR, TEMPLATES, EvolInstructGenerator, RoundCounts
from synth.generators.sources import items_digest, load_instructions
from synth.schemas import DatasetConfig, EngineConfig, EvolInstructConfig, Example, run_id


def effective_config(config: EvolInstructConfig, dataset: DatasetConfig) -> EvolInstructConfig:
    """`config` as it runs into `dataset`: a source that is the dataset itself is already in it,
    so its examples are not written again as round 0."""
    if config.include_source and Path(config.source).resolve() == Path(dataset.path).resolve():
        return config.model_copy(update={"include_source": False})
    return config


def evol_run_id(config: EvolInstructConfig, engine: EngineConfig, items: list[Example]) -> str:
    templates = TEMPLATES.hashes(config.language)
    return run_id(GENERATOR, config.identity(), items_digest(items), templates, engine.kind, engine.model)


Rounds = dict[str, RoundCounts]  # round number (a JSON key) -> its funnel


def merge_rounds(total: Rounds, new: Rounds) -> Rounds:
    """Add one chunk's per-round funnel (round -> `RoundFunnel.as_dict()`) to the run's running
    totals (JSON keys are strings)."""
    merged: Rounds = {
        k: {"in": v["in"], "evolved": v["evolved"], "eliminated": dict(v["eliminated"])} for k, v in total.items()
    }
    for rnd, funnel in new.items():
        entry = merged.setdefault(str(rnd), {"in": 0, "evolved": 0, "eliminated": {}})
        entry["in"] += funnel["in"]
        entry["evolved"] += funnel["evolved"]
        for reason, n in funnel["eliminated"].items():
            entry["eliminated"][reason] = entry["eliminated"].get(reason, 0) + n
    return merged


class EvolInstructSummary(ChunkedSummary):
    """An Evol-Instruct run's summary: each round's funnel (instructions in, evolved, eliminated by reason)."""

    rounds: Rounds


@dataclass
class EvolInstructJob(ChunkedJob[EvolInstructGenerator, Rounds, EvolInstructSummary]):
    """Evol-Instruct's part of a run (see `synth.flows.jobs`): one batch per chunk of source
    instructions, every round inside it; the per-round funnel accumulates in the run's state
    (`rounds`)."""

    config: EvolInstructConfig
    generator: ClassVar[str] = GENERATOR
    counts_key: ClassVar[str | None] = "rounds"
    counts_type: ClassVar[Any] = Rounds
    words: ClassVar[ChunkWords] = ChunkWords("Evol-Instruct", "instructions")
    add_counts = staticmethod(merge_rounds)

    def build(self, maker: Maker) -> EvolInstructGenerator:
        return EvolInstructGenerator(self.config, maker.engine, run_id=self.run_id)

    def make(self, maker: Maker, spec: Spec) -> Batch[dict[str, Rounds]]:
        result = self.gen_for(maker).run_chunk(spec.batch, spec.data, screen=maker.rules)
        return self.counted(result, {str(k): f.as_dict() for k, f in result.rounds.items()})


def run_evol_instruct(
    config: EvolInstructConfig, engine: EngineConfig, dataset: DatasetConfig, **options: Unpack[RunOptions]
) -> EvolInstructSummary:
    """Run (or resume) Evol-Instruct from `config.source` into `dataset` (see `RunOptions`); returns a summary."""
    config = effective_config(config, dataset)
    items = load_instructions(config.source)[: config.limit]
    return run_job(EvolInstructJob(config, items, evol_run_id(config, engine, items)), engine, dataset, **options)


evol_instruct_flow = generator_flow("evol-instruct", EvolInstructConfig, run_evol_instruct, "Evol-Instruct")
