"""Humpback's self-training loop (Li et al. 2023): backtranslation with trained models.

1. Fine-tune a backward model on the seed pairs turned round (output -> instruction), and M0 on the
   seed pairs; the backward model writes an instruction for every segment and M0 grades each pair
   (a backtranslation run into `WORK/iteration-0`, no curation chain: every candidate stays).
2. For k = 1..iterations: fine-tune M_k on the seeds (tagged with the seed system prompt) plus the
   pairs the previous model graded at or above `min_score` (tagged with the augmented one), and
   let M_k re-grade every candidate, kept or not (into `WORK/iteration-k`; the last iteration
   into the output dataset, through the run's curation chain).
3. The output dataset also holds the seed pairs, tagged, as their own run: the paper trains its
   final model on seeds plus curated data.

Every step resumes: a trained model folder whose base, data and settings match is reused (see
`synth.training.train`), and each iteration is a run of its own whose committed batches are never
graded again. Records carry the backward model in `model`, the last grader in `judge_model` and
every iteration's grade in `grades`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, NotRequired

import polars as pl
from prefect import flow
from typing_extensions import TypedDict

from synth.engines import EngineConfigError, engines_opened
from synth.flows.backtranslation import (
    BacktranslationJob,
    BacktranslationSummary,
    Funnel,
    backtranslation_run_id,
    chunk_stats,
    run_backtranslation,
)
from synth.flows.common import Committed, prints_not_logged
from synth.flows.job_kinds import OneBatchJob
from synth.flows.jobs import Batch, Built, Maker, RunContext, Spec
from synth.flows.run import run_job
from synth.generators.backtranslation import GENERATOR, BacktranslationGenerator
from synth.generators.documents import Segment
from synth.generators.seed_pairs import load_seed_pairs
from synth.schemas import (
    BacktranslationConfig,
    DatasetConfig,
    EngineConfig,
    Message,
    Record,
    ScriptedEngineConfig,
    VLLMEngineConfig,
    run_id,
)
from synth.schemas.curation import KEEP_ALL, CurationConfig
from synth.schemas.recipe import RayRunner
from synth.schemas.records import to_messages
from synth.schemas.runs import RunState, RunSummary, state_of
from synth.schemas.self_train import SelfTrainConfig
from synth.shards import scan

Trainer = Callable[[Any, Any], Path]  # (TrainingConfig, Examples) -> model folder

_CANDIDATE_COLUMNS = (
    "instruction",
    "output",
    "source_doc",
    "source_start",
    "source_end",
    "round",
    "model",
    "template",
    "template_hash",
    "judge_score",
    "grades",
)


def candidates(path: str | Path, rid: str) -> pl.LazyFrame:
    """Every candidate pair of run `rid`: its kept records and the pairs self-curation rejected
    (graded below the threshold, or ungradable), in a stable order."""
    kept = scan(path).filter(pl.col("run_id") == rid).select(_CANDIDATE_COLUMNS)
    rejected = (
        scan(path, "rejects")
        .filter((pl.col("run_id") == rid) & (pl.col("stage") == "self-curation"))
        .select(_CANDIDATE_COLUMNS)
    )
    return pl.concat([kept, rejected]).sort(["source_doc", "source_start", "source_end", "instruction"])


def write_candidates(path: str | Path, rid: str, out: Path) -> Path:
    """The candidates of run `rid` as one Parquet file (written once; renamed into place whole)."""
    if not out.is_file():
        tmp = out.with_name(out.name + ".tmp")
        candidates(path, rid).sink_parquet(tmp)
        os.replace(tmp, out)
    return out


class RegradeDelta(TypedDict):
    """Where the next batch starts in the candidates, and this batch's grades by score."""

    position: int
    scores: dict[str, int]


class RegradeState(RunState, total=False):
    position: int


class RegradeSummary(RunSummary):
    iteration: int


class SelfTrainingFigures(TypedDict):
    """What the loop made: its models, each iteration's run, the seed pairs' run and its folder."""

    backward_model: str
    graders: list[str]
    runs: list[str]
    seed_run: str | None
    work: str


class SelfTrainingSummary(RunSummary):
    """The last iteration's summary (the few-shot run's funnel, or a later iteration's number) with
    what the loop made."""

    funnel: NotRequired[Funnel]
    iteration: NotRequired[int]
    self_training: SelfTrainingFigures


@dataclass
class RegradeJob(Built[BacktranslationGenerator]):
    """One self-curation iteration: the run's engine (M_k) grades every candidate of `source`, one
    batch per `chunk_size` rows; a record keeps the grades of earlier iterations before its own."""

    config: BacktranslationConfig
    source: Path
    run_id: str
    iteration: int
    augmented_system: str
    generator: ClassVar[str] = GENERATOR
    state_type: ClassVar[Any] = RegradeState

    def build(self, maker: Maker) -> BacktranslationGenerator:
        return BacktranslationGenerator(self.config, maker.engine, [], self.run_id)

    def open(self, run: RunContext) -> str:
        self._total = pl.scan_parquet(self.source).select(pl.len()).collect().item()
        return f"Self-training iteration {self.iteration}: {run.model_name} grades {self._total} candidates"

    def plan(self, run: RunContext) -> Iterator[Spec]:
        start = state_of(run.info, RegradeState).get("position", 0)
        for offset in range(start, self._total, self.config.chunk_size):
            yield Spec(run.info.batches_done, offset)

    def make(self, maker: Maker, spec: Spec) -> Batch[RegradeDelta]:
        rows = pl.scan_parquet(self.source).slice(spec.data, self.config.chunk_size).collect().to_dicts()
        by_key = {(r["source_doc"], r["source_start"], r["source_end"], r["instruction"]): r for r in rows}
        pairs = [
            (
                Segment(r["source_doc"], r["source_start"], r["source_end"], "", r["output"]),
                r["instruction"],
                (spec.batch, self.iteration, i),
            )
            for i, r in enumerate(rows)
        ]
        result = self.gen_for(maker).grade(self.iteration, pairs)
        for record in [*result.kept, *result.rejects]:
            row = by_key[(record.source_doc, record.source_start, record.source_end, record.instruction)]
            earlier = row["grades"] or ([row["judge_score"]] if row["judge_score"] is not None else [])
            record.grades = [*earlier, *([record.judge_score] if record.judge_score is not None else [])]
            record.model, record.round = row["model"], row["round"]
            record.template, record.template_hash = row["template"], row["template_hash"]
        for record in result.kept:
            record.tags = [*record.tags, "augmented-data"]
            record.messages = [
                Message(role="system", content=self.augmented_system),
                *to_messages(record.instruction, record.input, record.output),
            ]
        delta: RegradeDelta = {"position": spec.data + len(rows), "scores": chunk_stats(result)["scores"]}
        return Batch(result.kept, result.rejects, delta)

    def fold(self, state: RegradeState, delta: RegradeDelta) -> RegradeState:
        return {**state, "position": delta["position"]}

    def committed(self, run: RunContext, spec: Spec, batch: Batch[RegradeDelta], result: Committed) -> str:
        return f"iteration {self.iteration}, candidates from {spec.data}: scores {batch.delta['scores']}"

    def progress(self, run: RunContext) -> float:
        return state_of(run.info, RegradeState).get("position", 0) / max(self._total, 1)

    def finish(self, run: RunContext, summary: RunSummary) -> RegradeSummary:
        return {**summary, "iteration": self.iteration}


@dataclass
class SeedJob(OneBatchJob):
    """The seed pairs, tagged with the seed system prompt, as one batch of a run of their own."""

    config: BacktranslationConfig
    pairs: list[tuple[str, str]]
    run_id: str
    seed_system: str
    generator: ClassVar[str] = GENERATOR

    def open(self, run: RunContext) -> str:
        return f"Seed pairs into {run.dataset.path}"

    def make(self, maker: Maker, spec: Spec) -> Batch[dict[str, bool]]:
        records = [
            Record(
                instruction=instruction,
                output=output,
                generator=GENERATOR,
                run_id=self.run_id,
                seed=self.config.seed,
                operation="seed",
                tags=["backtranslation", "seed-data"],
                messages=[Message(role="system", content=self.seed_system), *to_messages(instruction, "", output)],
            )
            for instruction, output in self.pairs
        ]
        return Batch(records, [], {"done": True})

    def committed(self, run: RunContext, spec: Spec, batch: Batch[Any], result: Committed) -> str:
        return f"{len(self.pairs)} seed pairs"


def run_self_training(
    config: BacktranslationConfig,
    engine: EngineConfig,
    dataset: DatasetConfig,
    *,
    curation: CurationConfig | None = None,
    trainer: Trainer | None = None,
) -> SelfTrainingSummary:
    """Run (or resume) the loop over `config.docs` into `dataset`, as `config.self_train` sets it
    (its defaults where that is None); the models are fine-tuned from `engine`'s model and served by
    engines of the same config. Returns the last iteration's summary with `self_training`: the
    models, each iteration's run and the work folder."""
    if not isinstance(engine, VLLMEngineConfig | ScriptedEngineConfig):
        raise EngineConfigError(
            "engine: self-training fine-tunes models and serves them itself; it needs the in-process "
            f"vLLM engine (kind: vllm), not {engine.kind}"
        )
    from synth.training import Example, TrainingConfig, read_report
    from synth.training.data import examples_from

    if trainer is None:
        from synth.training import train

        trainer = train
    fit: Trainer = trainer
    loop = config.self_train or SelfTrainConfig()
    work = Path(loop.work or f"{dataset.path}.self-train").absolute()
    seeds = load_seed_pairs(config.seeds, config.language, training=True)
    base = engine.model if isinstance(engine, VLLMEngineConfig) else None

    def model(name: str, direction: str, examples: list[Example]) -> Path:
        settings = TrainingConfig(
            out=work / "models" / name,
            base=base,
            direction=direction,
            epochs=loop.epochs,  # type: ignore[arg-type]
            max_steps=loop.max_steps,
            learning_rate=loop.learning_rate,
            batch_size=loop.batch_size,
            max_length=loop.max_length,
            seed=config.seed,
        )
        with prints_not_logged():
            return fit(settings, examples_from(examples, f"{name} training data"))

    def serve(folder: Path) -> EngineConfig:
        return engine.model_copy(update={"model": str(folder)})

    def at(path: str | Path) -> DatasetConfig:
        return DatasetConfig(path=str(path), shard_rows=dataset.shard_rows, wait=dataset.wait)

    def identity(folder: Path) -> str:  # what the folder's weights are, not just where they lie
        report = read_report(folder)
        return report.key if report is not None else str(folder)

    def finish(grader: Path) -> str:  # the seed pairs into the output, as a run of their own
        rid = run_id(GENERATOR, "seed-data", seeds.training_digest(), loop.seed_system)
        run_job(SeedJob(config, seeds.training, rid, loop.seed_system), serve(grader), dataset, curation=curation)
        return rid

    # Every seed pair trains (the demo rules are about what a prompt shows; these models see no demos).
    seed_data = [Example(instruction=i, output=o, system=loop.seed_system) for i, o in seeds.training]
    backward = model("backward", "backward", [Example(instruction=i, output=o) for i, o in seeds.training])
    graders = [model("m0", "forward", seed_data)]
    last = loop.iterations == 0
    target = dataset if last else at(work / "iteration-0")
    with engines_opened():
        rid = backtranslation_run_id(config, serve(graders[0]), serve(backward), seeds)
        job = BacktranslationJob(config, seeds, rid, serve(backward), trained_backward=True)
        summary: BacktranslationSummary | RegradeSummary = run_job(
            job, serve(graders[0]), target, curation=curation if last else KEEP_ALL
        )
        seed_run = finish(graders[0]) if last else None
    runs = [rid]
    for k in range(1, loop.iterations + 1):
        kept = scan(target.path).filter(pl.col("run_id") == runs[-1]).select("instruction", "output").collect()
        augmented = [Example(instruction=i, output=o, system=loop.augmented_system) for i, o in kept.iter_rows()]
        graders.append(model(f"m{k}", "forward", seed_data + augmented))
        source = write_candidates(target.path, runs[-1], work / f"candidates-{runs[-1]}.parquet")
        last = k == loop.iterations
        target = dataset if last else at(work / f"iteration-{k}")
        rid = run_id(GENERATOR, "self-curation", k, runs[-1], identity(graders[-1]), config.identity())
        with engines_opened():
            regrade = RegradeJob(config, source, rid, k, loop.augmented_system)
            summary = run_job(regrade, serve(graders[-1]), target, curation=curation if last else KEEP_ALL)
            seed_run = finish(graders[-1]) if last else None
        runs.append(rid)
    made: SelfTrainingFigures = {
        "backward_model": str(backward),
        "graders": [str(g) for g in graders],
        "runs": runs,
        "seed_run": seed_run,
        "work": str(work),
    }
    return {**summary, "self_training": made}  # type: ignore[typeddict-item]  # either iteration's summary


@flow(name="backtranslation", log_prints=True)
def backtranslation_flow(
    config: BacktranslationConfig,
    dataset: DatasetConfig,
    engine: EngineConfig | None = None,
    backward_engine: EngineConfig | None = None,
    curation: CurationConfig | None = None,
    runner: RayRunner | None = None,
) -> BacktranslationSummary | SelfTrainingSummary:
    """Backtranslation into a dataset directory, on the configured engine (the embedded model by
    default): the few-shot run of `synth.flows.backtranslation`, or with `config.self_train` the
    paper's self-training loop above. It lives here, above both, so neither imports the other.
    With a Ray `runner` the few-shot run's batches run on Ray; the self-training loop, which
    fine-tunes and serves its models on this machine, runs here."""
    if config.self_train is not None:
        return run_self_training(config, engine or VLLMEngineConfig(), dataset, curation=curation)
    return run_backtranslation(
        config, engine or VLLMEngineConfig(), dataset, backward_engine=backward_engine, curation=curation, runner=runner
    )
