"""The code flows, SelfCodeAlign and OSS-Instruct. SelfCodeAlign: batches of seed functions until the target is kept or the seeds run out.

Batch n takes the seeds at places n*B .. n*B+B-1 of the run's seed order (the scanned functions
shuffled by the run seed), so a resumed run makes exactly the batches an uninterrupted one would,
and batches are made ahead of their turn (the model writes batch n+1 while batch n's programs run
in the sandbox). The funnel (seeds, tasks, answers, executions by kind) adds up in the run's state.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar, Unpack

from synth.flows.common import Committed
from synth.flows.jobs import Batch, Maker, RunContext, Spec, TargetJob
from synth.flows.run import RunOptions, generator_flow, run_job
from synth.generators.code_seeds import Snippet, code_files, usable_seeds
from synth.generators.oss_instruct import GENERATOR as OSS_GENERATOR
from synth.generators.oss_instruct import TEMPLATES as OSS_TEMPLATES
from synth.generators.oss_instruct import OSSInstructGenerator
from synth.generators.self_code_align import GENERATOR, TEMPLATES, SelfCodeAlignGenerator, demonstrations_hash
from synth.sandbox import Sandbox
from synth.schemas import DatasetConfig, EngineConfig, RunInfo, run_id
from synth.schemas.code import OSSInstructConfig, SelfCodeAlignConfig


def seed_order(config: SelfCodeAlignConfig) -> list[Snippet]:
    """The run's seeds in the order its batches take them."""
    seeds = list(usable_seeds(config.code, config.classes))
    random.Random(config.seed).shuffle(seeds)
    return seeds


def self_code_align_run_id(config: SelfCodeAlignConfig, engine: EngineConfig, seeds: list[Snippet]) -> str:
    digest = hashlib.sha256("\n".join(s.id for s in seeds).encode()).hexdigest()[:16]
    templates = TEMPLATES.hashes(config.language)
    return run_id(GENERATOR, config.identity(), digest, templates, demonstrations_hash(), engine.kind, engine.model)


@dataclass
class SelfCodeAlignJob(TargetJob[SelfCodeAlignGenerator]):
    """SelfCodeAlign's part of a run (see `synth.flows.jobs`)."""

    config: SelfCodeAlignConfig
    seeds: list[Snippet]
    run_id: str
    generator: ClassVar[str] = GENERATOR
    _sandbox: Sandbox | None = field(default=None, init=False, repr=False)

    def build(self, maker: Maker) -> SelfCodeAlignGenerator:
        if self._sandbox is None:
            self._sandbox = Sandbox(self.config.sandbox, self.config.isolation)
        return SelfCodeAlignGenerator(self.config, maker.engine, run_id=self.run_id, sandbox=self._sandbox)

    def __getstate__(self) -> dict[str, Any]:
        # A worker gets its seeds in the batch's spec and builds a sandbox of its own.
        state = super().__getstate__()
        state["seeds"], state["_sandbox"] = [], None
        return state

    def open(self, run: RunContext) -> str:
        Sandbox(self.config.sandbox, self.config.isolation).check()
        return f"SelfCodeAlign into {run.dataset.path}: records kept of {self.config.num_records}"

    def size(self, info: RunInfo) -> int:
        return self.config.batch_size

    def spec_for(self, info: RunInfo, pending: Batch | None = None) -> Spec:
        first = info.batches_done * self.config.batch_size
        return Spec(info.batches_done, self.seeds[first : first + self.config.batch_size])

    def _stop(self, info: RunInfo, empty: int) -> str:
        if why := super()._stop(info, empty):
            return why
        return "seeds" if info.batches_done * self.config.batch_size >= len(self.seeds) else ""

    def stop_line(self, info: RunInfo) -> str:
        if self.stopped == "seeds":
            return f"every one of the {len(self.seeds)} seeds was used; {info.kept} of {self.config.num_records} kept"
        return super().stop_line(info)

    def next_after_generation(self, run: RunContext, spec: Spec) -> Spec | None:
        """The batch after `spec`, to make while `spec`'s answers run, when it is sure to be planned
        whatever the batches not yet committed keep: seeds remain, the budget allows it, and even if
        every seed before it kept a record the target would not be reached."""
        following = spec.batch + 1
        info = run.info
        budget = self.config.max_batches
        if following * self.config.batch_size >= len(self.seeds) or (budget is not None and following >= budget):
            return None
        if info.kept + (following - info.batches_done) * self.config.batch_size >= self.config.num_records:
            return None
        return Spec(
            following, self.seeds[following * self.config.batch_size : (following + 1) * self.config.batch_size]
        )

    def make(self, maker: Maker, spec: Spec) -> Batch:
        free = maker.engine_free
        made = self.gen_for(maker).run_batch(spec.batch, spec.data, (lambda: free(spec)) if free else None)
        funnel = Counter({"seeds": len(spec.data)})
        for reject in made.rejects:
            key = f"{reject.stage}:{reject.reason}" if reject.stage == "execution" else reject.stage
            funnel[key] += 1
        funnel["kept"] = len(made.kept)
        return Batch(made.kept, made.rejects, {"funnel": dict(funnel), "execution_seconds": made.execution_seconds})

    def fold(self, state: dict[str, Any], delta: dict[str, Any]) -> dict[str, Any]:
        total = Counter(state.get("funnel", {}))
        total.update(delta.get("funnel", {}))
        seconds = state.get("execution_seconds", 0.0) + delta.get("execution_seconds", 0.0)
        return {**state, "funnel": dict(total), "execution_seconds": round(seconds, 3)}

    def committed(self, run: RunContext, spec: Spec, batch: Batch, result: Committed) -> str:
        ran = sum(n for k, n in batch.delta["funnel"].items() if k.startswith("execution:")) + len(batch.kept)
        return f"{len(spec.data)} seeds, {ran} answers run ({self.run_total(run)})"

    def finish(self, run: RunContext, summary: dict[str, Any]) -> None:
        super().finish(run, summary)
        summary["funnel"] = run.info.state.get("funnel", {})
        summary["execution_seconds"] = run.info.state.get("execution_seconds", 0.0)
        summary["seeds"] = len(self.seeds)


def run_self_code_align(
    config: SelfCodeAlignConfig, engine: EngineConfig, dataset: DatasetConfig, **options: Unpack[RunOptions]
) -> dict[str, Any]:
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
class OSSInstructJob(TargetJob[OSSInstructGenerator]):
    """OSS-Instruct's part of a run: batch n draws the snippets numbered n*B .. n*B+B-1 (each from
    the run seed and its number), so the batches are the same on a resume and on any worker."""

    config: OSSInstructConfig
    run_id: str
    generator: ClassVar[str] = OSS_GENERATOR
    _sandbox: Sandbox | None = field(default=None, init=False, repr=False)

    def build(self, maker: Maker) -> OSSInstructGenerator:
        if self._sandbox is None and self.config.execute:
            self._sandbox = Sandbox(self.config.sandbox, self.config.isolation)
        return OSSInstructGenerator(self.config, maker.engine, run_id=self.run_id, sandbox=self._sandbox)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_sandbox"] = None
        return state

    def open(self, run: RunContext) -> str:
        if self.config.execute:
            Sandbox(self.config.sandbox, self.config.isolation).check()
        return f"OSS-Instruct into {run.dataset.path}: records kept of {self.config.num_records}"

    def size(self, info: RunInfo) -> int:
        return self.config.batch_size

    def spec_for(self, info: RunInfo, pending: Batch | None = None) -> Spec:
        first = info.batches_done * self.config.batch_size
        return Spec(info.batches_done, list(range(first, first + self.config.batch_size)))

    def next_after_generation(self, run: RunContext, spec: Spec) -> Spec | None:
        """The next batch, made while this one's solutions run (see `SelfCodeAlignJob`)."""
        following, info, budget = spec.batch + 1, run.info, self.config.max_batches
        if budget is not None and following >= budget:
            return None
        if info.kept + (following - info.batches_done) * self.config.batch_size >= self.config.num_records:
            return None
        first = following * self.config.batch_size
        return Spec(following, list(range(first, first + self.config.batch_size)))

    def make(self, maker: Maker, spec: Spec) -> Batch:
        free = maker.engine_free
        made = self.gen_for(maker).run_batch(spec.batch, spec.data, (lambda: free(spec)) if free else None)
        funnel = Counter({"seeds": len(spec.data), "kept": len(made.kept)})
        for reject in made.rejects:
            funnel[f"{reject.stage}:{reject.reason}" if reject.stage == "execution" else reject.stage] += 1
        return Batch(made.kept, made.rejects, {"funnel": dict(funnel), "execution_seconds": made.execution_seconds})

    fold = SelfCodeAlignJob.fold

    def committed(self, run: RunContext, spec: Spec, batch: Batch, result: Committed) -> str:
        return f"{len(spec.data)} snippets ({self.run_total(run)})"

    def finish(self, run: RunContext, summary: dict[str, Any]) -> None:
        super().finish(run, summary)
        summary["funnel"] = run.info.state.get("funnel", {})
        summary["execution_seconds"] = run.info.state.get("execution_seconds", 0.0)


def run_oss_instruct(
    config: OSSInstructConfig, engine: EngineConfig, dataset: DatasetConfig, **options: Unpack[RunOptions]
) -> dict[str, Any]:
    """Run (or resume) OSS-Instruct into `dataset` (see `RunOptions`); returns a summary."""
    return run_job(OSSInstructJob(config, oss_instruct_run_id(config, engine)), engine, dataset, **options)


oss_instruct_flow = generator_flow("oss-instruct", OSSInstructConfig, run_oss_instruct, "OSS-Instruct")
