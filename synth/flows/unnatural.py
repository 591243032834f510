"""The Unnatural Instructions flow: `num_records` prompts, `batch_size` a batch, in order.

Each batch asks the next `batch_size` prompts (a larger `num_records` extends a run); each request's
seed comes from the run seed and the prompt's number, and each prompt's seed set from its number,
so a resumed run asks exactly what an uninterrupted one would. The batches read nothing of one
another (the duplicate filter runs within a batch; across batches the curation chain's dedup
removes a repeat), so the runners make them ahead and, on Ray, side by side; the run's state is
two counters, whatever the run's size.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Unpack

from typing_extensions import TypedDict

from synth.flows.common import Committed
from synth.flows.jobs import Batch, Built, Maker, RunContext, Spec
from synth.flows.run import RunOptions, generator_flow, run_job
from synth.generators.unnatural import GENERATOR, TEMPLATES, Demo, UnnaturalGenerator, read_seed_sets
from synth.schemas import DatasetConfig, EngineConfig, run_id
from synth.schemas.runs import RunState, RunSummary, state_of
from synth.schemas.unnatural import Unnatural, UnnaturalConfig


def seeds_digest(sets: list[list[Demo]]) -> str:
    return hashlib.sha256(repr(sets).encode()).hexdigest()


def unnatural_run_id(config: UnnaturalConfig, engine: EngineConfig, sets: list[list[Demo]]) -> str:
    templates = TEMPLATES.hashes(config.language)
    return run_id(GENERATOR, config.identity(), seeds_digest(sets), templates, engine.kind, engine.model)


class UnnaturalDelta(TypedDict):
    """A batch's prompts asked, and the core examples it made (before curation)."""

    asked: int
    cores: int


class UnnaturalState(RunState, total=False):
    """The prompts asked and core examples made over the run's committed batches."""

    asked: int
    cores: int


class UnnaturalSummary(RunSummary):
    prompts: int
    core_examples: int  # made by the generator, before curation


@dataclass
class UnnaturalJob(Built[UnnaturalGenerator]):
    """Unnatural Instructions' part of a run (see `synth.flows.jobs`)."""

    config: UnnaturalConfig
    sets: list[list[Demo]]
    run_id: str
    generator: ClassVar[str] = GENERATOR
    independent: ClassVar[bool] = True
    state_type: ClassVar[Any] = UnnaturalState

    def build(self, maker: Maker) -> UnnaturalGenerator:
        return UnnaturalGenerator(self.config, maker.engine, self.sets, run_id=self.run_id)

    def open(self, run: RunContext) -> str:
        expand = f", {self.config.paraphrases} paraphrases each" if self.config.expand else ""
        return f"Unnatural Instructions into {run.dataset.path}: {self.config.num_records} prompts{expand}"

    def plan(self, run: RunContext) -> Iterator[Spec]:
        # From the first prompt not asked yet, `batch_size` a batch: a resumed or extended run
        # goes on where the committed batches stopped.
        batch, first = run.info.batches_done, state_of(run.info, UnnaturalState).get("asked", 0)
        while first < self.config.num_records:
            count = min(self.config.batch_size, self.config.num_records - first)
            yield Spec(batch, {"first": first, "count": count})
            batch, first = batch + 1, first + count

    def make(self, maker: Maker, spec: Spec) -> Batch[UnnaturalDelta]:
        data = spec.data
        made = self.gen_for(maker).run_batch(spec.batch, data["first"], data["count"])
        cores = sum(1 for r in made.kept if (block := Unnatural.of(r)) is not None and block.paraphrase == 0)
        return Batch(made.kept, made.rejects, {"asked": data["count"], "cores": cores})

    def fold(self, state: UnnaturalState, delta: UnnaturalDelta) -> UnnaturalState:
        asked, cores = state.get("asked", 0) + delta["asked"], state.get("cores", 0) + delta["cores"]
        return {**state, "asked": asked, "cores": cores}

    def committed(self, run: RunContext, spec: Spec, batch: Batch[UnnaturalDelta], result: Committed) -> str:
        return f"{spec.data['count']} prompts, {result.kept} records kept"

    def progress(self, run: RunContext) -> float:
        return min(1.0, state_of(run.info, UnnaturalState).get("asked", 0) / self.config.num_records)

    def finish(self, run: RunContext, summary: RunSummary) -> UnnaturalSummary:
        state = state_of(run.info, UnnaturalState)
        return {**summary, "prompts": state.get("asked", 0), "core_examples": state.get("cores", 0)}


def run_unnatural(
    config: UnnaturalConfig, engine: EngineConfig, dataset: DatasetConfig, **options: Unpack[RunOptions]
) -> UnnaturalSummary:
    """Run (or resume) Unnatural Instructions into `dataset` (see `RunOptions`); returns a summary."""
    sets = read_seed_sets(config.seeds, config.language)
    return run_job(UnnaturalJob(config, sets, unnatural_run_id(config, engine, sets)), engine, dataset, **options)


unnatural_flow = generator_flow("unnatural", UnnaturalConfig, run_unnatural, "Unnatural Instructions")
