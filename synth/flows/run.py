"""One run of a generator into a dataset: the entry every generator's run function calls.

A generator supplies a `Job` (`synth.flows.jobs`): how to plan its batches from the committed
state, how to make one batch, and what to do once one is committed. `run_job` hands it to a
runner, which owns what is the same for every generator: the dataset's writer and its lock, the
run's record in the manifest (start, resume, finish), curation, commits in batch order with their
retries, token metering, progress and the summary. Nothing of a batch changes the run until it
commits, so a retried or resumed batch starts from the committed state. The runners:

- local (`synth.flows.local`): batches made on the flow's process, the next one made ahead while
  one is committed when the job's batches are independent;
- Ray (`synth.flows.scaleout`): batches made and curated on Ray workers, committed by the flow in
  batch order; the same job, so the same records for the same seeds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypedDict, TypeVar, Unpack

from prefect import flow
from pydantic import BaseModel

from synth.engines import Engine
from synth.flows.jobs import RETRY_DELAYS, Job, Retries
from synth.flows.local import run_locally
from synth.schemas import DatasetConfig, EngineConfig, VLLMEngineConfig
from synth.schemas.curation import CurationConfig
from synth.schemas.recipe import RayRunner
from synth.schemas.runs import RunSummary

R = TypeVar("R", bound=RunSummary)


class RunOptions(TypedDict, total=False):
    """What every generator's run takes besides its config, engine config and dataset.

    - `curation`: the chain each batch passes before it is written (default: exact and near dedup,
      plus the heuristics in profiles other than `paper`).
    - `model`: a live engine to use instead of the one built from the engine config (tests pass a
      scripted one; the engine config still names the model in the run id). Local runs only.
    - `batch_retries`: how often a batch whose engine calls fail is retried, with backoff (default
      2); a batch changes nothing until it commits, so a retry starts clean.
    - `retry_delays`: the seconds to wait before each retry (default 5, then 30 for the rest).
    - `pipeline`: make the next batch while this one is curated and committed, for jobs whose
      batches are independent (default True; the records written are the same either way).
    - `runner`: a Ray runner to make the batches on Ray workers (default: on this process).
    - `rebuild_index`: rebuild the dataset's MinHash index from its shards before the first batch.
    """

    curation: CurationConfig | None
    model: Engine | None
    batch_retries: int
    retry_delays: Sequence[float]
    pipeline: bool
    runner: RayRunner | None
    rebuild_index: bool


def run_job(job: Job[R], engine: EngineConfig | None, dataset: DatasetConfig, **options: Unpack[RunOptions]) -> R:
    """Run (or resume) `job` into `dataset` on the runner the options name; returns the run's
    summary. `engine` None (and no `model`): the run calls no model (a local run only)."""
    curation = options.get("curation")
    retries = Retries(options.get("batch_retries", 2), tuple(options.get("retry_delays", RETRY_DELAYS)))
    runner = options.get("runner")
    if runner is not None:
        if options.get("model") is not None:
            raise ValueError("a live engine cannot be sent to Ray workers: give the engine as a config")
        from synth.flows.scaleout import run_on_ray

        if engine is None:
            raise ValueError("a Ray run needs an engine config for its workers")
        return run_on_ray(job, engine, dataset, curation or CurationConfig(), runner, retries)
    model, pipeline = options.get("model"), options.get("pipeline", True)
    return run_locally(job, engine, dataset, curation, model, retries, pipeline, options.get("rebuild_index", False))


def generator_flow(name: str, config_type: type[BaseModel], run: Callable[..., RunSummary], title: str) -> Any:
    """The Prefect flow of a generator whose run takes only the common options: `name` as Prefect
    shows it, `run(config, engine, dataset, curation=..., runner=...)` its run function. Its
    parameters are typed with `config_type`, so Prefect validates them as it would a hand-written
    flow's. With a Ray `runner`, call the flow with a Ray task runner (see `synth.flows.recipe`)."""

    def run_generator(
        config: Any,
        dataset: DatasetConfig,
        engine: Any = None,
        curation: CurationConfig | None = None,
        runner: RayRunner | None = None,
    ) -> RunSummary:
        return run(config, engine or VLLMEngineConfig(), dataset, curation=curation, runner=runner)

    run_generator.__annotations__ = {
        "config": config_type,
        "dataset": DatasetConfig,
        "engine": EngineConfig | None,
        "curation": CurationConfig | None,
        "runner": RayRunner | None,
        "return": dict[str, Any],
    }
    run_generator.__name__ = run_generator.__qualname__ = f"{name.replace('-', '_')}_flow"
    run_generator.__doc__ = (
        f"{title} into a dataset directory, on the configured engine (the embedded model by default)."
    )
    return flow(name=name, log_prints=True)(run_generator)
