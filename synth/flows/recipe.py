"""Running recipes: once (`synth run`) or on their schedules against a Prefect server (`synth serve`).

A recipe's flow runs its steps in order as subflows (each visible in the Prefect UI), then leaves
two artifacts on the run: a table of the dataset's funnel and a markdown sample of its records.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from prefect import flow, serve
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.schedules import Cron, Interval

from synth.flows.backtranslation import backtranslation_flow
from synth.flows.evol_instruct import evol_instruct_flow
from synth.flows.self_instruct import self_instruct_flow
from synth.schemas import BacktranslationConfig, EvolInstructConfig, SelfInstructConfig
from synth.schemas.recipe import EvolInstructStep, Recipe, SelfInstructStep, load_recipe
from synth.shards.summary import funnel, summarize


def _run_step(recipe: Recipe, step: Any) -> dict[str, Any]:
    fields = step.model_dump(exclude={"generator"})
    if isinstance(step, SelfInstructStep):
        return self_instruct_flow(
            config=SelfInstructConfig(**fields), dataset=recipe.dataset, engine=recipe.engine, curation=recipe.curation
        )
    if isinstance(step, EvolInstructStep):
        return evol_instruct_flow(
            config=EvolInstructConfig(**fields), dataset=recipe.dataset, engine=recipe.engine, curation=recipe.curation
        )
    return backtranslation_flow(
        config=BacktranslationConfig(**fields), dataset=recipe.dataset, engine=recipe.engine, curation=recipe.curation
    )


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


@flow(name="recipe", log_prints=True)
def recipe_flow(recipe: Recipe) -> list[dict[str, Any]]:
    """Every step of `recipe`, in order, into its dataset; returns each step's summary."""
    summaries = [_run_step(recipe, step) for step in recipe.steps]
    publish_artifacts(recipe.dataset.path, key=recipe.name.lower().replace("_", "-").replace(".", "-"))
    return summaries


def serve_recipes(paths: list[str | Path]) -> None:
    """Register each recipe's schedule as a deployment and run them as they come due (blocks)."""
    deployments = []
    for path in paths:
        recipe = load_recipe(path)
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
