"""The Self-Instruct flow: one Prefect task per batch, each committed to the dataset before the next.

A run's id is a hash of what defines its output (generator config without the target size, seed
tasks, prompt templates, engine and model). Re-running the same command resumes that run from its
last committed batch; raising `--num` extends it; any other change starts a new run beside it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Unpack

import polars as pl
from typing_extensions import TypedDict

from synth.filters.spill import Strings, StringSequence
from synth.flows.common import Committed
from synth.flows.job_kinds import OneBatchJob, TargetJob
from synth.flows.jobs import Batch, Maker, RunContext, Spec
from synth.flows.run import RunOptions, generator_flow, run_job
from synth.generators.provenance import Origin
from synth.generators.seeds import load_seed_tasks
from synth.generators.self_instruct import GENERATOR, TEMPLATES, SelfInstructGenerator
from synth.schemas import DatasetConfig, EngineConfig, Record, RunInfo, SeedTask, SelfInstructConfig, run_id
from synth.schemas.runs import RunState, TargetSummary, state_of
from synth.shards import scan


def _seeds_digest(seeds: list[SeedTask]) -> str:
    return hashlib.sha256("\n".join(s.model_dump_json() for s in seeds).encode()).hexdigest()


def self_instruct_run_id(config: SelfInstructConfig, engine: EngineConfig, seeds: list[SeedTask]) -> str:
    seed_hash = _seeds_digest(seeds)
    templates = TEMPLATES.hashes(config.language)
    return run_id(GENERATOR, config.identity(), seed_hash, templates, engine.kind, engine.model)


def accepted_tasks(path: str | Path, rid: str) -> list[str]:
    """Tasks that earlier batches of run `rid` admitted to the pool, in batch then text order.

    Every admitted task ends up either in a kept record or in a reject of the classification or
    instance stage, so the pool can be rebuilt from the shards alone.
    """
    kept = scan(path, "kept").filter(pl.col("run_id") == rid).select("batch", "instruction")
    # Rejects of the classification and instance stages, and records the curation chain dropped
    # (shards written before the phase column: those with an output, which task-level rejects lack).
    curated = pl.col("phase") == "curation"
    late = (
        scan(path, "rejects")
        .filter(
            (pl.col("run_id") == rid)
            & (pl.col("stage").is_in(["classification", "instance"]) | curated.fill_null(pl.col("output") != ""))
        )
        .select("batch", "instruction")
    )
    rows = pl.concat([kept, late]).unique().collect().rows()
    return [text for _, text in sorted(rows)]


# A first guess of records kept per prompt, before a run has a yield of its own: a prompt asks for
# up to eight new tasks and each keeps up to `instances_per_task` instances, so a few kept records
# per prompt is usual. Only the first batch of a run with a small target uses it.
FIRST_BATCH_YIELD = 8


def prompts_for_batch(config: SelfInstructConfig, kept: int, prompts_sent: int, last: int | None = None) -> int:
    """How many prompts the next batch sends: the full batch, or, near the target, about what the
    run's yield so far says is needed (with a margin), so the last batch does not overshoot much.
    A first batch asks for about what a small target needs (`FIRST_BATCH_YIELD`), so `--num 20`
    does not write a whole batch's worth. Later batches never go below a quarter batch: each costs
    three engine calls whatever its size, and never above twice the last batch (`last`): a yield
    measured on a few prompts is a rough guess."""
    remaining = config.num_records - kept
    if prompts_sent == 0:
        return max(1, min(config.prompts_per_batch, math.ceil(config.num_records / FIRST_BATCH_YIELD)))
    ceiling = config.prompts_per_batch if last is None else min(config.prompts_per_batch, 2 * last)
    if kept == 0:
        return ceiling
    per_prompt = kept / prompts_sent
    floor = max(1, math.ceil(config.prompts_per_batch / 4))
    return max(min(floor, ceiling), min(ceiling, math.ceil(1.25 * remaining / per_prompt)))


class Admitted(StringSequence):
    """The first `size` tasks of a pool that only grows, then `extra`: a view, not a copy, so a
    batch's spec costs nothing per task in the process. Pickled (for a worker in another process)
    it becomes the tuple of its tasks."""

    def __init__(self, base: Sequence[str], size: int, extra: Sequence[str] = ()) -> None:
        self.base, self.size, self.extra = base, size, tuple(extra)

    def __len__(self) -> int:
        return self.size + len(self.extra)

    def at(self, k: int) -> str:
        return self.base[k] if k < self.size else self.extra[k - self.size]

    def __eq__(self, other: object) -> bool:
        """Equal to a sequence of the same tasks: at once when both view one pool to one length."""
        if isinstance(other, Admitted) and other.base is self.base and other.size == self.size:
            return other.extra == self.extra
        return isinstance(other, Sequence) and len(other) == len(self) and all(map(str.__eq__, self, other))

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, ...]:
        return (tuple, (tuple(self),))


@dataclass(frozen=True)
class SelfInstructSpec:
    """One Self-Instruct batch: how many prompts it sends, and the machine tasks the pool holds
    when it is planned (a worker's generator catches up with them before it samples)."""

    prompts: int
    pool: Sequence[str]


class SelfInstructState(RunState, total=False):
    """What a Self-Instruct run keeps to size its next batch: the prompts sent so far and in the
    last batch (the pool itself is rebuilt from the shards, see `accepted_tasks`)."""

    prompts_sent: int
    last_prompts: int


class SelfInstructDelta(TypedDict):
    """What one batch adds: its prompts, and the tasks it admitted to the pool, in order."""

    prompts: int
    accepted_tasks: list[str]


class SelfInstructSummary(TargetSummary):
    """A Self-Instruct run's summary: with the seed tasks' own run, when their instances were
    written (`seed_run`, None otherwise) and how many records it kept."""

    seed_run: str | None
    seed_records: int


@dataclass
class SelfInstructJob(TargetJob[SelfInstructGenerator]):
    """Self-Instruct's part of a run (see `synth.flows.jobs`): batches of task-generation prompts
    until the target is kept or the batch budget is spent; the task pool grows as batches commit."""

    config: SelfInstructConfig
    seeds: list[SeedTask]
    run_id: str
    generator: ClassVar[str] = GENERATOR
    state_type: ClassVar[Any] = SelfInstructState
    # Machine tasks admitted, in order, in a mapped file (`Strings`): the pool grows with the run.
    pool: Strings = field(default_factory=Strings, init=False)

    def build(self, maker: Maker) -> SelfInstructGenerator:
        return SelfInstructGenerator(self.config, maker.engine, self.seeds, run_id=self.run_id)

    def open(self, run: RunContext) -> str:
        self.pool = Strings()
        self.pool.extend(accepted_tasks(run.dataset.path, self.run_id))
        return f"Self-Instruct into {run.dataset.path}: records kept of {self.config.num_records}"

    def size(self, info: RunInfo) -> int:
        state = state_of(info, SelfInstructState)
        sent, last = state.get("prompts_sent", 0), state.get("last_prompts")
        return prompts_for_batch(self.config, info.kept, sent, last)

    def spec_for(self, info: RunInfo, pending: Batch[SelfInstructDelta] | None = None) -> Spec:
        # The pool the next batch samples from: every task admitted so far, the pending batch's too.
        admitted = Admitted(self.pool, len(self.pool), pending.delta["accepted_tasks"] if pending is not None else ())
        return Spec(info.batches_done, SelfInstructSpec(self.size(info), admitted))

    def make(self, maker: Maker, spec: Spec) -> Batch[SelfInstructDelta]:
        gen = self.gen_for(maker)
        pool = spec.data.pool
        held = len(gen.machine_tasks)
        if held > len(pool) or (held and gen.machine_tasks[-1] != pool[held - 1]):
            # The generator took in a batch made ahead on a guess that did not hold (a retry made
            # its batch differently): start it again from this batch's pool.
            self.forget(maker)
            gen = self.gen_for(maker)
        if len(gen.machine_tasks) < len(pool):
            gen.add_to_pool(pool[len(gen.machine_tasks) :])
        result = gen.run_batch(spec.batch, spec.data.prompts)
        delta: SelfInstructDelta = {"prompts": result.prompts, "accepted_tasks": result.accepted_tasks}
        return Batch(result.kept, result.rejects, delta)

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "pool": Strings()}  # a worker gets the pool in each spec

    def fold(self, state: SelfInstructState, delta: SelfInstructDelta) -> SelfInstructState:
        prompts = delta["prompts"]
        return {**state, "prompts_sent": state.get("prompts_sent", 0) + prompts, "last_prompts": prompts}

    def committed(self, run: RunContext, spec: Spec, batch: Batch[SelfInstructDelta], result: Committed) -> str:
        tasks = batch.delta["accepted_tasks"]
        self.pool.extend(tasks)
        return f"{spec.data.prompts} prompts, {len(tasks)} new tasks ({self.run_total(run)})"


@dataclass
class SeedTasksJob(OneBatchJob):
    """The seed tasks' own instances, tagged `seed-data`, as one batch of a run of their own: the
    paper's training data holds the human-written seed instances beside the generated ones."""

    config: SelfInstructConfig
    seeds: list[SeedTask]
    run_id: str
    generator: ClassVar[str] = GENERATOR

    def open(self, run: RunContext) -> str:
        return f"Seed tasks into {run.dataset.path}"

    def make(self, maker: Maker, spec: Spec) -> Batch[dict[str, bool]]:
        origin = Origin(GENERATOR, self.run_id, self.config.seed)
        records = [
            Record(
                instruction=task.instruction,
                input=instance.input,
                output=instance.output,
                is_classification=task.is_classification,
                operation="seed",
                source_id=task.id,
                tags=["self-instruct", "seed-data"],
                **origin.fields(spec.batch),
            )
            for task in self.seeds
            for instance in task.instances
        ]
        return Batch(records, [], {"done": True})

    def committed(self, run: RunContext, spec: Spec, batch: Batch[Any], result: Committed) -> str:
        return f"{len(batch.kept)} seed instances"


def seed_tasks_run_id(config: SelfInstructConfig, seeds: list[SeedTask]) -> str:
    return run_id(GENERATOR, "seed-data", _seeds_digest(seeds), config.seed)


def run_self_instruct(
    config: SelfInstructConfig, engine: EngineConfig, dataset: DatasetConfig, **options: Unpack[RunOptions]
) -> SelfInstructSummary:
    """Run (or resume) Self-Instruct into `dataset` (see `RunOptions`); returns a summary of the run."""
    seeds = load_seed_tasks(config.seeds, config.language)
    if (curation := options.get("curation")) is not None and curation.mixture:
        # A mixture is the target: the run ends when every ability has its records.
        config = config.model_copy(update={"num_records": sum(curation.mixture.values())})
    seed_run, seed_records = None, 0
    # A mixture says what the dataset holds, ability by ability: the seeds are not added to it.
    if config.include_seed_tasks and any(s.instances for s in seeds) and not (curation and curation.mixture):
        # First, so that generated instances repeating a seed's are the duplicates, not the seeds.
        seed_run = seed_tasks_run_id(config, seeds)
        seed_records = run_job(SeedTasksJob(config, seeds, seed_run), engine, dataset, **options)["kept"]
    summary = run_job(
        SelfInstructJob(config, seeds, self_instruct_run_id(config, engine, seeds)), engine, dataset, **options
    )
    return {**summary, "seed_run": seed_run, "seed_records": seed_records}


self_instruct_flow = generator_flow("self-instruct", SelfInstructConfig, run_self_instruct, "Self-Instruct")
