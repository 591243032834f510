"""`synth run` and `synth serve`: recipes, once now or on their schedules against a Prefect server."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from rich.text import Text

from synth.cli.checks import check_out, check_prefect_api, check_server, check_step_inputs, preflight, writing
from synth.cli.errors import fail, log_tracebacks_off
from synth.cli.options import path_argument
from synth.cli.output import console, print_summary
from synth.flows import api


def run_recipe(recipe: Annotated[Path, path_argument("RECIPE", help="Recipe file (YAML, TOML or JSON).")]) -> None:
    """Run every step of a recipe once, in order, into its dataset, on the recipe's runner (this
    process, or a Ray cluster). Re-running resumes where an interrupted run stopped."""
    from synth.schemas.recipe import load_recipe

    loaded = load_recipe(recipe)
    out = Path(loaded.dataset.path)
    api.prepare_process(out)
    check_out(out, f"{recipe}: dataset.path")
    # Reading the steps' inputs loads the flows' modules, Prefect among them: every other check first.
    preflight(None, [(loaded.engine, f"{recipe}: engine.")], loaded.curation, f"{recipe}: curation.", flow=False)
    check_step_inputs(loaded)
    check_prefect_api()
    from synth.flows.recipe import recipe_flow

    log_tracebacks_off()

    with writing(out):
        summaries = recipe_flow(recipe=loaded)
    for summary in summaries:
        console.print(Text(str(summary["generator"]), style="bold"))
        print_summary(summary)


def serve_recipes(
    recipes: Annotated[list[Path], path_argument("RECIPES", help="Recipe files with a schedule.")],
) -> None:
    """Register the recipes' schedules as deployments on the Prefect server (PREFECT_API_URL) and
    run them as they come due, until stopped."""
    api.prepare_process()
    from synth.schemas.recipe import load_recipe

    for path in recipes:
        if load_recipe(path).schedule is None:
            fail(f"{path}: no 'schedule'; use `synth run` for a one-off run")
    check_server()
    from synth.flows.recipe import serve_recipes as serve

    serve(list(recipes))
