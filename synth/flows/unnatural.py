"""The Unnatural Instructions flow: `num_records` prompts, `batch_size` a batch, in order.

Each batch asks the prompts after those asked so far (a larger `num_records` extends a run); each request's seed comes from the run seed and the
prompt's number, and each prompt's seed set from its number, so a resumed run asks exactly what an
uninterrupted one would. The duplicate filter is run-wide: the keys (instruction and input) of the
examples generated so far are the run's state, each batch's spec carries them and its delta adds
its own. The next batch's spec follows from the batch made alone (curation does not change it), so
the local runner makes it ahead (`speculate`) while the batch before is curated and committed.
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
from synth.schemas.unnatural import UnnaturalConfig


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

    def build(self, maker: Maker) -> UnnaturalGenerator:
        return UnnaturalGenerator(self.config, maker.engine, self.sets, run_id=self.run_id)

    def open(self, run: RunContext) -> str:
        expand = f", {self.config.paraphrases} paraphrases each" if self.config.expand else ""
        return f"Unnatural Instructions into {run.dataset.path}: {self.config.num_records} prompts{expand}"

    def _spec(self, batch: int, state: dict[str, Any]) -> Spec | None:
        """Batch `batch` from the run's state: the next prompts and the keys generated so far."""
        first = state.get("asked", 0)
        count = min(self.config.batch_size, self.config.num_records - first)
        return Spec(batch, {"first": first, "count": count, "seen": list(state.get("seen", []))}) if count > 0 else None

    def plan(self, run: RunContext) -> Any:
        # Lazily: batch n + 1 is planned once batch n is committed, from the keys it added.
        while (spec := self._spec(run.info.batches_done, run.info.state)) is not None:
            yield spec

    def speculate(self, run: RunContext, spec: Spec, batch: Batch) -> Spec | None:
        """The next batch's spec once `batch` commits: its prompts counted and its keys added,
        whatever curation keeps."""
        return self._spec(spec.batch + 1, self.fold(run.info.state, batch.delta))

    def make(self, maker: Maker, spec: Spec) -> Batch:
        data = spec.data
        made, keys = self.gen_for(maker).run_batch(spec.batch, data["first"], data["count"], data["seen"])
        return Batch(made.kept, made.rejects, {"seen": keys, "asked": data["count"]})

    def fold(self, state: dict[str, Any], delta: dict[str, Any]) -> dict[str, Any]:
        return {
            **state,
            "seen": sorted({*state.get("seen", []), *delta.get("seen", [])}),
            "asked": state.get("asked", 0) + delta.get("asked", 0),
        }

    def committed(self, run: RunContext, spec: Spec, batch: Batch, result: Committed) -> str:
        return f"{spec.data['count']} prompts, {result.kept} records kept"

    def progress(self, run: RunContext) -> float:
        return min(1.0, run.info.state.get("asked", 0) / self.config.num_records)

    def finish(self, run: RunContext, summary: dict[str, Any]) -> None:
        summary["prompts"] = run.info.state.get("asked", 0)
        summary["core_examples"] = len(run.info.state.get("seen", []))


def run_unnatural(
    config: UnnaturalConfig, engine: EngineConfig, dataset: DatasetConfig, **options: Unpack[RunOptions]
) -> dict[str, Any]:
    """Run (or resume) Unnatural Instructions into `dataset` (see `RunOptions`); returns a summary."""
    sets = read_seed_sets(config.seeds, config.language)
    return run_job(UnnaturalJob(config, sets, unnatural_run_id(config, engine, sets)), engine, dataset, **options)


unnatural_flow = generator_flow("unnatural", UnnaturalConfig, run_unnatural, "Unnatural Instructions")
