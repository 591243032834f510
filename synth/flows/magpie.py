"""The Magpie flow: batches of conversations until the target is kept or the budget is spent.

Each batch starts `size` conversations with per-request seeds from the run seed and the batch
number, so a resumed run makes exactly the batches an uninterrupted one would. Near the target a
batch is sized from the run's yield so far, so the last one does not overshoot much.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, ClassVar, NotRequired, Unpack

from typing_extensions import TypedDict

from synth.flows.common import Committed
from synth.flows.job_kinds import TargetJob
from synth.flows.jobs import Batch, Maker, RunContext, Spec
from synth.flows.run import RunOptions, generator_flow, run_job
from synth.generators.magpie import GENERATOR, MagpieGenerator
from synth.schemas import DatasetConfig, EngineConfig, RunInfo, run_id
from synth.schemas.magpie import MagpieConfig
from synth.schemas.runs import RunState, RunSummary, TargetSummary, state_of

_log = logging.getLogger(__name__)


def magpie_run_id(config: MagpieConfig, engine: EngineConfig) -> str:
    return run_id(GENERATOR, config.identity(), engine.kind, engine.model)


def conversations_for_batch(config: MagpieConfig, kept: int, started: int) -> int:
    """A full batch, or near the target about what the yield so far says is needed (with a margin)."""
    remaining = config.num_records - kept
    if started == 0 or kept == 0:
        return min(config.batch_size, max(1, remaining))
    return max(1, min(config.batch_size, math.ceil(1.25 * remaining * started / kept)))


class MagpieState(RunState, total=False):
    """What a Magpie run keeps to size its next batch: the conversations started so far."""

    started: int


class MagpieDelta(TypedDict):
    started: int


class TurnBudgetFigures(TypedDict):
    """The token budgets of a conversation's query and response, as the model's context allows."""

    query_tokens: int
    response_tokens: int
    scaled: bool
    note: str


class MagpieSummary(TargetSummary):
    """A Magpie run's summary: with the turn budget its batches used, where they were made on the
    flow (Ray workers log theirs)."""

    turn_budget: NotRequired[TurnBudgetFigures]


@dataclass
class MagpieJob(TargetJob[MagpieGenerator]):
    """Magpie's part of a run (see `synth.flows.jobs`): batches of conversations until the target
    is kept or the batch budget is spent."""

    config: MagpieConfig
    run_id: str
    generator: ClassVar[str] = GENERATOR
    state_type: ClassVar[Any] = MagpieState

    def build(self, maker: Maker) -> MagpieGenerator:
        gen = MagpieGenerator(self.config, maker.engine, run_id=self.run_id)
        if note := gen.budget.describe():
            _log.info("Magpie: %s", note)
        return gen

    def open(self, run: RunContext) -> str:
        return f"Magpie into {run.dataset.path}: records kept of {self.config.num_records}"

    def size(self, info: RunInfo) -> int:
        return conversations_for_batch(self.config, info.kept, state_of(info, MagpieState).get("started", 0))

    def make(self, maker: Maker, spec: Spec) -> Batch[MagpieDelta]:
        result = self.gen_for(maker).run_batch(spec.batch, spec.data)
        return Batch(result.kept, result.rejects, {"started": spec.data})

    def fold(self, state: MagpieState, delta: MagpieDelta) -> MagpieState:
        return {**state, "started": state.get("started", 0) + delta["started"]}

    def committed(self, run: RunContext, spec: Spec, batch: Batch[MagpieDelta], result: Committed) -> str:
        return f"{spec.data} conversations ({self.run_total(run)})"

    def finish(self, run: RunContext, summary: RunSummary) -> MagpieSummary:
        done: MagpieSummary = {**super().finish(run, summary)}
        if self.gen is None:  # the batches were made on workers: each logged its budget
            return done
        budget = self.gen.budget
        done["turn_budget"] = {
            "query_tokens": budget.query_tokens,
            "response_tokens": budget.response_tokens,
            "scaled": budget.scaled,
            "note": budget.describe(),
        }
        return done


def run_magpie(
    config: MagpieConfig, engine: EngineConfig, dataset: DatasetConfig, **options: Unpack[RunOptions]
) -> MagpieSummary:
    """Run (or resume) Magpie into `dataset` (see `RunOptions`); returns a summary of the run."""
    return run_job(MagpieJob(config, magpie_run_id(config, engine)), engine, dataset, **options)


magpie_flow = generator_flow("magpie", MagpieConfig, run_magpie, "Magpie")
