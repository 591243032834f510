"""The code flows, SelfCodeAlign and OSS-Instruct: batches of seeds until the target is kept (or,
for SelfCodeAlign, the seed functions run out), one `CodeJob` for both.

SelfCodeAlign's seeds are the scanned functions shuffled by the run seed; OSS-Instruct's are
numbers, each drawing its snippet from the run seed. Either way batch n is made from its seeds
alone, so a resumed run makes exactly the batches an uninterrupted one would, and the model writes
batch n+1 while batch n's programs run in the sandbox.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar, Unpack

from typing_extensions import TypedDict

from synth.flows.common import Committed
from synth.flows.job_kinds import TargetJob
from synth.flows.jobs import Batch, Maker, RunContext, Spec
from synth.flows.run import RunOptions, generator_flow, run_job
from synth.generators.code_replies import demonstrations_hash
from synth.generators.code_seeds import Snippet, code_files, usable_seeds
from synth.generators.oss_instruct import GENERATOR as OSS_GENERATOR
from synth.generators.oss_instruct import TEMPLATES as OSS_TEMPLATES
from synth.generators.oss_instruct import OSSInstructGenerator
from synth.generators.self_code_align import GENERATOR, TEMPLATES, SelfCodeAlignGenerator
from synth.sandbox import Sandbox
from synth.schemas import DatasetConfig, EngineConfig, RunInfo, run_id
from synth.schemas.code import OSSInstructConfig, SelfCodeAlignConfig
from synth.schemas.runs import RunState, RunSummary, TargetSummary, state_of


def seed_order(config: SelfCodeAlignConfig) -> list[Snippet]:
    """The run's seeds in the order its batches take them."""
    seeds = list(usable_seeds(config.code, config.classes))
    random.Random(config.seed).shuffle(seeds)
    return seeds


def self_code_align_run_id(config: SelfCodeAlignConfig, engine: EngineConfig, seeds: list[Snippet]) -> str:
    digest = hashlib.sha256("\n".join(s.id for s in seeds).encode()).hexdigest()[:16]
    templates = TEMPLATES.hashes(config.language)
    return run_id(GENERATOR, config.identity(), digest, templates, demonstrations_hash(), engine.kind, engine.model)


class CodeDelta(TypedDict):
    """What a code batch adds up: its funnel (seeds, each reject stage, each execution kind,
    kept) and the seconds its programs ran."""

    funnel: dict[str, int]
    execution_seconds: float


class CodeState(RunState, total=False):
    """The funnel and the execution seconds, over the run's committed batches."""

    funnel: dict[str, int]
    execution_seconds: float


class CodeSummary(TargetSummary):
    funnel: dict[str, int]
    execution_seconds: float


class SelfCodeAlignSummary(CodeSummary):
    """A SelfCodeAlign run's summary: with the number of seed functions it had."""

    seeds: int


@dataclass
class CodeJob(TargetJob[Any]):
    """A code generator's part of a run (see `synth.flows.jobs`): batches of `batch_size` seeds,
    batch n made from `seeds_of(n)` alone, so a resumed run and any worker make the same batches.
    The model writes; then the batch's programs run in the sandbox while the local runner makes the
    next batch (`next_after_generation`). The funnel (seeds, each reject stage, each execution kind,
    kept) and the seconds spent running programs add up in the run's state and its summary.
    Subclasses build the generator (its `run_batch(batch, seeds, generated)` makes a batch) and say
    what batch n's seeds are, when the seeds run out and whether programs run at all."""

    config: Any  # a code config: batch_size, num_records, max_batches, sandbox, isolation
    state_type: ClassVar[Any] = CodeState
    _sandbox: Sandbox | None = field(default=None, init=False, repr=False)

    def seeds_of(self, batch: int) -> Any:
        raise NotImplementedError

    def exhausted(self, batch: int) -> bool:
        """Whether no seed is left for batch `batch`."""
        return False

    def runs_code(self) -> bool:
        return True

    def sandbox(self) -> Sandbox | None:
        """The sandbox this process runs the job's programs in (made once, checked once); None
        when the job runs none."""
        if self._sandbox is None and self.runs_code():
            self._sandbox = Sandbox(self.config.sandbox, self.config.isolation)
        return self._sandbox

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()  # a worker builds a sandbox of its own
        state["_sandbox"] = None
        return state

    def check_sandbox(self) -> None:
        if (box := self.sandbox()) is not None:
            box.check()

    def size(self, info: RunInfo) -> int:
        return self.config.batch_size

    def spec_for(self, info: RunInfo, pending: Batch[CodeDelta] | None = None) -> Spec:
        return Spec(info.batches_done, self.seeds_of(info.batches_done))

    def _stop(self, info: RunInfo, empty: int) -> str:
        if why := super()._stop(info, empty):
            return why
        return "seeds" if self.exhausted(info.batches_done) else ""

    def next_after_generation(self, run: RunContext, spec: Spec) -> Spec | None:
        """The batch after `spec`, to make while `spec`'s programs run, when it is sure to be planned
        whatever the batches not yet committed keep: seeds remain, the budget allows it, and even if
        every seed before it kept a record the target would not be reached."""
        following, info, budget = spec.batch + 1, run.info, self.config.max_batches
        if self.exhausted(following) or (budget is not None and following >= budget):
            return None
        if info.kept + (following - info.batches_done) * self.config.batch_size >= self.config.num_records:
            return None
        return Spec(following, self.seeds_of(following))

    def make(self, maker: Maker, spec: Spec) -> Batch[CodeDelta]:
        free = maker.engine_free
        made = self.gen_for(maker).run_batch(spec.batch, spec.data, (lambda: free(spec)) if free else None)
        funnel = Counter({"seeds": len(spec.data)})
        for reject in made.rejects:
            funnel[f"{reject.stage}:{reject.reason}" if reject.stage == "execution" else reject.stage] += 1
        funnel["kept"] = len(made.kept)
        return Batch(made.kept, made.rejects, {"funnel": dict(funnel), "execution_seconds": made.execution_seconds})

    def fold(self, state: CodeState, delta: CodeDelta) -> CodeState:
        total = Counter(state.get("funnel", {}))
        total.update(delta.get("funnel", {}))
        seconds = state.get("execution_seconds", 0.0) + delta.get("execution_seconds", 0.0)
        return {**state, "funnel": dict(total), "execution_seconds": round(seconds, 3)}

    def finish(self, run: RunContext, summary: RunSummary) -> CodeSummary:
        state = state_of(run.info, CodeState)
        funnel, seconds = state.get("funnel", {}), state.get("execution_seconds", 0.0)
        return {**super().finish(run, summary), "funnel": funnel, "execution_seconds": seconds}


@dataclass
class SelfCodeAlignJob(CodeJob):
    """SelfCodeAlign's part of a run: batch n takes the seeds at places n*B .. n*B+B-1 of the run's
    seed order; the run ends early when they run out."""

    config: SelfCodeAlignConfig
    seeds: list[Snippet]
    run_id: str
    generator: ClassVar[str] = GENERATOR

    def build(self, maker: Maker) -> SelfCodeAlignGenerator:
        sandbox = self.sandbox()
        assert sandbox is not None
        return SelfCodeAlignGenerator(self.config, maker.engine, run_id=self.run_id, sandbox=sandbox)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()  # a worker gets its seeds in the batch's spec
        state["seeds"] = []
        return state

    def seeds_of(self, batch: int) -> list[Snippet]:
        size = self.config.batch_size
        return self.seeds[batch * size : (batch + 1) * size]

    def exhausted(self, batch: int) -> bool:
        return batch * self.config.batch_size >= len(self.seeds)

    def open(self, run: RunContext) -> str:
        self.check_sandbox()
        return f"SelfCodeAlign into {run.dataset.path}: records kept of {self.config.num_records}"

    def stop_line(self, info: RunInfo) -> str:
        if self.stopped == "seeds":
            return f"every one of the {len(self.seeds)} seeds was used; {info.kept} of {self.config.num_records} kept"
        return super().stop_line(info)

    def committed(self, run: RunContext, spec: Spec, batch: Batch[CodeDelta], result: Committed) -> str:
        ran = sum(n for k, n in batch.delta["funnel"].items() if k.startswith("execution:")) + len(batch.kept)
        return f"{len(spec.data)} seeds, {ran} answers run ({self.run_total(run)})"

    def finish(self, run: RunContext, summary: RunSummary) -> SelfCodeAlignSummary:
        return {**super().finish(run, summary), "seeds": len(self.seeds)}


def run_self_code_align(
    config: SelfCodeAlignConfig, engine: EngineConfig, dataset: DatasetConfig, **options: Unpack[RunOptions]
) -> SelfCodeAlignSummary:
    """Run (or resume) SelfCodeAlign into `dataset` (see `RunOptions`); returns a summary."""
    seeds = seed_order(config)
    job = SelfCodeAlignJob(config, seeds, self_code_align_run_id(config, engine, seeds))
    return run_job(job, engine, dataset, **options)


code_flow = generator_flow("code", SelfCodeAlignConfig, run_self_code_align, "SelfCodeAlign")


def oss_instruct_run_id(config: OSSInstructConfig, engine: EngineConfig) -> str:
    files = hashlib.sha256("\n".join(shown for _, shown in code_files(config.code)).encode()).hexdigest()[:16]
    templates = OSS_TEMPLATES.hashes(config.language)
    return run_id(OSS_GENERATOR, config.identity(), files, templates, engine.kind, engine.model)


@dataclass
class OSSInstructJob(CodeJob):
    """OSS-Instruct's part of a run: batch n draws the snippets numbered n*B .. n*B+B-1 (each from
    the run seed and its number); solutions run only with `execute`."""

    config: OSSInstructConfig
    run_id: str
    generator: ClassVar[str] = OSS_GENERATOR

    def build(self, maker: Maker) -> OSSInstructGenerator:
        return OSSInstructGenerator(self.config, maker.engine, run_id=self.run_id, sandbox=self.sandbox())

    def seeds_of(self, batch: int) -> list[int]:
        size = self.config.batch_size
        return list(range(batch * size, (batch + 1) * size))

    def runs_code(self) -> bool:
        return self.config.execute

    def open(self, run: RunContext) -> str:
        self.check_sandbox()
        return f"OSS-Instruct into {run.dataset.path}: records kept of {self.config.num_records}"

    def committed(self, run: RunContext, spec: Spec, batch: Batch[CodeDelta], result: Committed) -> str:
        return f"{len(spec.data)} snippets ({self.run_total(run)})"


def run_oss_instruct(
    config: OSSInstructConfig, engine: EngineConfig, dataset: DatasetConfig, **options: Unpack[RunOptions]
) -> CodeSummary:
    """Run (or resume) OSS-Instruct into `dataset` (see `RunOptions`); returns a summary."""
    return run_job(OSSInstructJob(config, oss_instruct_run_id(config, engine)), engine, dataset, **options)


oss_instruct_flow = generator_flow("oss-instruct", OSSInstructConfig, run_oss_instruct, "OSS-Instruct")
