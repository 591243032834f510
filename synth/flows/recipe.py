"""Running recipes: once (`synth run`) or on their schedules against a Prefect server (`synth serve`).

A recipe's flow runs its steps in order as subflows (each visible in the Prefect UI), then leaves
two artifacts on the run: a table of the dataset's funnel and a markdown sample of its records.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from prefect import flow, get_run_logger, serve
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.schedules import Cron, Interval
from pydantic import BaseModel

from synth.engines import engines_opened
from synth.registry import GENERATORS
from synth.schemas.recipe import LocalRunner, RayRunner, Recipe, load_recipe
from synth.schemas.runs import RunSummary
from synth.shards.summary import funnel, summarize


def _run_step(recipe: Recipe, step: BaseModel) -> RunSummary:
    """One step: its generator's flow, with its batches on Ray workers when the recipe's runner is
    Ray (see `synth.flows.scaleout`)."""
    generator = GENERATORS[step.generator]  # type: ignore[attr-defined]
    config = generator.config(**step.model_dump(exclude={"generator"}))
    runner = recipe.runner
    flow_ = generator.flow
    if isinstance(runner, RayRunner):
        from prefect_ray import RayTaskRunner

        on_ray = RayTaskRunner(address=runner.address, init_kwargs=runner.init_kwargs)
        flow_ = flow_.with_options(task_runner=on_ray, flow_run_name=f"{step.generator}-on-ray")  # type: ignore[attr-defined]
        return flow_(
            config=config, dataset=recipe.dataset, engine=recipe.engine, curation=recipe.curation, runner=runner
        )
    return flow_(config=config, dataset=recipe.dataset, engine=recipe.engine, curation=recipe.curation)


def publish_artifacts(path: str | Path, key: str) -> None:
    """The funnel as a table and a few samples as markdown, on the current flow run."""
    table = funnel(path)
    create_table_artifact(
        key=f"{key}-funnel",
        table=table.to_dicts(),
        description=f"Funnel of {path}: kept, and rejects by stage and reason",
    )
    summary = summarize(path, sample=5)
    lines = [f"# {path}", "", f"{summary['kept']} kept, {summary['rejected']} rejected.", "", "## Sample records", ""]
    for s in summary["samples"]:
        lines += [f"**Instruction** ({s['generator']}): {s['instruction']}", "", f"> {s['output'][:500]}", ""]
    lines += ["## Sample rejects", ""]
    lines += [f"- `{r['stage']}` / {r['reason']}: {r['instruction'][:200]}" for r in summary["reject_samples"]]
    create_markdown_artifact(key=f"{key}-samples", markdown="\n".join(lines), description="Sample records and rejects")


@contextmanager
def gpu_slot(recipe: Recipe) -> Iterator[None]:
    """Hold a slot of the recipe's GPU concurrency limit while its engine is loaded, and release
    the engine before the slot."""
    name = recipe.gpu_limit_name()
    if name is None:
        yield
        return
    from prefect.concurrency.sync import concurrency

    get_run_logger().info("waiting for a slot of the concurrency limit %r", name)
    with concurrency(name, occupy=1), engines_opened():
        yield


@contextmanager
def ray_session(runner: LocalRunner | RayRunner) -> Iterator[None]:
    """One Ray connection for every step of a recipe (the steps' task runners reuse it)."""
    if not isinstance(runner, RayRunner):
        yield
        return
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address=runner.address, **runner.init_kwargs)
    try:
        yield
    finally:
        if started:
            ray.shutdown()


@flow(name="recipe", log_prints=True)
def recipe_flow(recipe: Recipe) -> list[RunSummary]:
    """Every step of `recipe`, in order, into its dataset; returns each step's summary."""
    with gpu_slot(recipe), ray_session(recipe.runner):
        summaries = [_run_step(recipe, step) for step in recipe.steps]
    publish_artifacts(recipe.dataset.path, key=recipe.name.lower().replace("_", "-").replace(".", "-"))
    return summaries


def ensure_concurrency_limit(name: str, slots: int = 1) -> bool:
    """Create the global concurrency limit `name` on the current Prefect server if it has none of
    that name (an existing one is left as its owner set it); returns whether it was created."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
            return False
        except ObjectNotFound:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=slots))
            return True


def serve_recipes(paths: list[str | Path]) -> None:
    """Register each recipe's schedule as a deployment and run them as they come due (blocks)."""
    deployments = []
    for path in paths:
        recipe = load_recipe(path)
        limit = recipe.gpu_limit_name()
        if limit is not None and ensure_concurrency_limit(limit):
            print(f"created the global concurrency limit {limit!r} with one slot (prefect gcl update to change it)")
        schedule = None
        if recipe.schedule is not None and recipe.schedule.cron:
            schedule = Cron(recipe.schedule.cron, timezone=recipe.schedule.timezone)
        elif recipe.schedule is not None and recipe.schedule.interval_seconds:
            schedule = Interval(timedelta(seconds=recipe.schedule.interval_seconds), timezone=recipe.schedule.timezone)
        deployment = recipe_flow.to_deployment(
            name=recipe.name,
            parameters={"recipe": recipe.model_dump(mode="json")},
            schedule=schedule,
            concurrency_limit=1,  # one run of a recipe at a time: its model loads once, its dataset has one writer
        )
        deployments.append(deployment)
    serve(*deployments)  # type: ignore[arg-type]
