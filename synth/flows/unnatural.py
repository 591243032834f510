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
from dataclasses import dataclass
from typing import Any, ClassVar, Unpack

from synth.flows.common import Committed
from synth.flows.jobs import Batch, Built, Maker, RunContext, Spec
from synth.flows.run import RunOptions, generator_flow, run_job
from synth.generators.unnatural import GENERATOR, TEMPLATES, Demo, UnnaturalGenerator, read_seed_sets
from synth.schemas import DatasetConfig, EngineConfig, run_id
from synth.schemas.unnatural import Unnatural, UnnaturalConfig


def seeds_digest(sets: list[list[Demo]]) -> str:
    return hashlib.sha256(repr(sets).encode()).hexdigest()


def unnatural_run_id(config: UnnaturalConfig, engine: EngineConfig, sets: list[list[Demo]]) -> str:
    templates = TEMPLATES.hashes(config.language)
    return run_id(GENERATOR, config.identity(), seeds_digest(sets), templates, engine.kind, engine.model)


@dataclass
class UnnaturalJob(Built[UnnaturalGenerator]):
    """Unnatural Instructions' part of a run (see `synth.flows.jobs`)."""

    config: UnnaturalConfig
    sets: list[list[Demo]]
    run_id: str
    generator: ClassVar[str] = GENERATOR
    independent: ClassVar[bool] = True

    def build(self, maker: Maker) -> UnnaturalGenerator:
        return UnnaturalGenerator(self.config, maker.engine, self.sets, run_id=self.run_id)

    def open(self, run: RunContext) -> str:
        expand = f", {self.config.paraphrases} paraphrases each" if self.config.expand else ""
        return f"Unnatural Instructions into {run.dataset.path}: {self.config.num_records} prompts{expand}"

    def plan(self, run: RunContext) -> Any:
        # From the first prompt not asked yet, `batch_size` a batch: a resumed or extended run
        # goes on where the committed batches stopped.
        batch, first = run.info.batches_done, run.info.state.get("asked", 0)
        while first < self.config.num_records:
            count = min(self.config.batch_size, self.config.num_records - first)
            yield Spec(batch, {"first": first, "count": count})
            batch, first = batch + 1, first + count

    def make(self, maker: Maker, spec: Spec) -> Batch:
        data = spec.data
        made = self.gen_for(maker).run_batch(spec.batch, data["first"], data["count"])
        cores = sum(1 for r in made.kept if (block := Unnatural.of(r)) is not None and block.paraphrase == 0)
        return Batch(made.kept, made.rejects, {"asked": data["count"], "cores": cores})

    def fold(self, state: dict[str, Any], delta: dict[str, Any]) -> dict[str, Any]:
        return {**state, **{key: state.get(key, 0) + delta.get(key, 0) for key in ("asked", "cores")}}

    def committed(self, run: RunContext, spec: Spec, batch: Batch, result: Committed) -> str:
        return f"{spec.data['count']} prompts, {result.kept} records kept"

    def progress(self, run: RunContext) -> float:
        return min(1.0, run.info.state.get("asked", 0) / self.config.num_records)

    def finish(self, run: RunContext, summary: dict[str, Any]) -> None:
        summary["prompts"] = run.info.state.get("asked", 0)
        summary["core_examples"] = run.info.state.get("cores", 0)  # made by the generator, before curation


def run_unnatural(
    config: UnnaturalConfig, engine: EngineConfig, dataset: DatasetConfig, **options: Unpack[RunOptions]
) -> dict[str, Any]:
    """Run (or resume) Unnatural Instructions into `dataset` (see `RunOptions`); returns a summary."""
    sets = read_seed_sets(config.seeds, config.language)
    return run_job(UnnaturalJob(config, sets, unnatural_run_id(config, engine, sets)), engine, dataset, **options)


unnatural_flow = generator_flow("unnatural", UnnaturalConfig, run_unnatural, "Unnatural Instructions")
