"""Recipes: validation with clear errors, a whole recipe run with artifacts, and the example recipes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from synth.engines import ChatRequest, ScriptedEngine
from synth.schemas import ConfigFileError
from synth.schemas.recipe import Recipe, load_recipe
from synth.shards import read_manifest
from tests.conftest import SelfInstructScript
from tests.generators.test_evol_instruct import EvolScript

ROOT = Path(__file__).parents[2]


def write(tmp_path, data) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def base(tmp_path) -> dict:
    return {
        "name": "t1",
        "dataset": {"path": str(tmp_path / "ds")},
        "engine": {"kind": "scripted"},
        "steps": [
            {"generator": "self_instruct", "num_records": 4, "prompts_per_batch": 2, "include_seed_tasks": False},
            {"generator": "evol_instruct", "source": str(tmp_path / "ds"), "rounds": 1},
        ],
    }


def test_a_valid_recipe_loads_with_typed_steps(tmp_path):
    recipe = load_recipe(write(tmp_path, base(tmp_path)))
    assert isinstance(recipe, Recipe) and [s.generator for s in recipe.steps] == ["self_instruct", "evol_instruct"]
    assert recipe.engine.kind == "scripted" and recipe.schedule is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.update(colour="red"), "colour: Extra inputs are not permitted"),
        # Keys as the file spells them: the union tag pydantic puts in the path is left out.
        (lambda r: r["steps"][0].update(num_records="many"), "steps.0.num_records: Input should be a valid integer"),
        (lambda r: r["steps"][0].update(temprature=0.1), "steps.0.temprature: Extra inputs are not permitted"),
        (lambda r: r["steps"][0].update(task_sampling={"top_p": 0}), "steps.0.task_sampling.top_p"),
        (lambda r: r.update(schedule={"cron": "0 25 * * *"}), "schedule.cron: '0 25 * * *' is not a valid cron"),
        (lambda r: r.update(schedule={"interval_seconds": 60, "timezone": "Moon/Base"}), "schedule.timezone"),
        (lambda r: r["steps"][0].update(generator="magic"), "steps.0"),
        (
            lambda r: r["steps"].append({"generator": "backtranslation", "docs": "/no/such/docs"}),
            "steps.2.docs: /no/such/docs does not exist",
        ),
        (lambda r: r.update(schedule={"cron": "0 2 * * *", "interval_seconds": 60}), "exactly one of"),
        (lambda r: r.update(steps=[]), "steps"),
    ],
)
def test_bad_recipes_name_the_file_and_the_key(tmp_path, change, message):
    data = base(tmp_path)
    change(data)
    path = write(tmp_path, data)
    with pytest.raises(ConfigFileError) as e:
        load_recipe(path)
    assert str(e.value).startswith(str(path)) and message in str(e.value)


@pytest.mark.parametrize("name", ["demo.yaml", "every-minute.yaml", "nightly-gpu.yaml", "ray-cluster.yaml"])
def test_example_recipes_validate(name):
    path = ROOT / "recipes" / name
    recipe = load_config_file_only(path)
    assert recipe.steps


def load_config_file_only(path):
    """The example recipes name paths of other machines; check their schema, not their inputs."""
    from synth.schemas import load_config_file

    return load_config_file(path, Recipe)


@pytest.mark.usefixtures("prefect_harness")
def test_recipe_run_chains_steps_into_one_dataset_and_publishes_artifacts(tmp_path, monkeypatch):
    from prefect.client.orchestration import get_client

    import synth.flows.local as run_module
    from synth.flows.recipe import recipe_flow

    si, evo = SelfInstructScript(), EvolScript()

    def responder(request: ChatRequest):
        return si(request) if request.tag.startswith("self_instruct") else evo(request)

    engine = ScriptedEngine(responder)
    monkeypatch.setattr(run_module, "get_engine", lambda config: engine)
    recipe = load_recipe(write(tmp_path, base(tmp_path)))
    summaries = recipe_flow(recipe=recipe)
    assert [s["generator"] for s in summaries] == ["self_instruct", "evol_instruct"]
    manifest = read_manifest(tmp_path / "ds")
    assert {r.generator for r in manifest.runs.values()} == {"self_instruct", "evol_instruct"}
    assert summaries[1]["kept"] == summaries[0]["kept"]  # every kept instruction evolved once
    with get_client(sync_client=True) as client:
        keys = {a.key for a in client.read_artifacts()}
    assert {"t1-funnel", "t1-samples"} <= keys
