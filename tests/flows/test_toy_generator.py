"""A generator added as one module and one registry entry, at test time, gets a `synth generate`
command, a recipe step type, and runs like the built-in ones (its Ray run is in `test_ray`)."""

from __future__ import annotations

import json

import polars as pl
import pytest
from typer.testing import CliRunner

from synth import registry
from synth.schemas import ConfigFileError, Record
from synth.schemas.recipe import load_recipe
from synth.shards import read_manifest, scan, verify
from synth.viewer.record import arrange
from tests.flows import toy_generator
from tests.flows.test_recipe import write

pytestmark = pytest.mark.usefixtures("prefect_harness")
ENGINE = {"kind": "scripted", "responder": "tests.flows.toy_generator:responder"}


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(registry.GENERATORS, "toy", toy_generator.ENTRY)


def written(path) -> list[tuple]:
    return scan(path).collect().sort("seed").select("seed", "instruction", "output", "batch").rows()


def test_synth_generate_runs_a_generator_registered_at_run_time_and_resumes(toy, tmp_path):
    from synth.cli import app

    engine = tmp_path / "engine.json"
    engine.write_text(json.dumps(ENGINE))
    out = tmp_path / "ds"
    help_text = CliRunner().invoke(app, ["generate", "toy", "--help"], env={"COLUMNS": "200"}).output
    assert "--topic" in help_text and "What the questions are about." in help_text
    args = [
        "generate",
        "toy",
        "--topic",
        "rivers",
        "--num-records",
        "7",
        "--out",
        str(out),
        "--engine-config",
        str(engine),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert verify(out) == []
    (run,) = read_manifest(out).runs.values()
    assert run.generator == "toy" and run.status == "finished" and run.batches_done == 3
    assert run.state["asked"] == 7 and run.config["topic"] == "rivers"
    # Seeds 0..6; the scripted model answers off-form for seeds 2 and 5: two parse rejects.
    assert [r[0] for r in written(out)] == [0, 1, 3, 4, 6]
    assert all("rivers" in r[1] for r in written(out))
    rejects = scan(out, "rejects").collect()
    assert rejects["stage"].to_list() == ["off-form", "off-form"] and sorted(rejects["seed"]) == [2, 5]
    # Its own block comes back typed in its own column, on records and rejects alike.
    kept = scan(out).collect().sort("seed")
    assert kept["toy"].to_list() == [{"topic": "rivers", "number": n} for n in (0, 1, 3, 4, 6)]
    assert sorted(b["number"] for b in rejects["toy"]) == [2, 5]
    assert toy_generator.Toy.of(Record.model_validate(kept.row(0, named=True))) == toy_generator.Toy(
        topic="rivers", number=0
    )
    # The dataset card says what the block holds, from the block itself.
    card = (out / "README.md").read_text()
    assert "## Toy question" in card and "| `toy.number` | int |" in card and "which question it is" in card
    # A record's page shows the block under its title.
    assert [title for title, _ in arrange(kept.row(0, named=True))["blocks"]] == ["Toy question"]
    assert sum(t["completion"] for t in run.state["tokens"].values()) > 0
    # A value the config refuses names the option; the same command again writes nothing twice.
    bad = CliRunner().invoke(app, [*args[:-4], "--batch-size", "0", *args[-4:]])
    assert bad.exit_code == 2 and "--batch-size" in bad.output
    assert CliRunner().invoke(app, args).exit_code == 0
    assert scan(out).collect().height == 5


def test_a_recipe_step_names_a_generator_registered_at_run_time(toy, tmp_path):
    from synth.flows.recipe import recipe_flow

    recipe = {
        "name": "toys",
        "dataset": {"path": str(tmp_path / "ds")},
        "engine": ENGINE,
        "steps": [{"generator": "toy", "topic": "stars", "num_records": 4, "batch_size": 2}],
    }
    loaded = load_recipe(write(tmp_path, recipe))
    (step,) = loaded.steps
    assert isinstance(step, toy_generator.ToyConfig) and step.generator == "toy" and step.topic == "stars"
    (summary,) = recipe_flow(recipe=loaded)
    assert summary["kept"] == 3 and summary["asked"] == 4
    kept = scan(tmp_path / "ds").collect()
    assert kept.filter(pl.col("generator") == "toy").height == 3
    # The step type checks the generator's own fields, naming the step and the key.
    recipe["steps"][0]["batch_size"] = 0
    with pytest.raises(ConfigFileError, match=r"steps\.0\.batch_size: Input should be greater than or equal to 1"):
        load_recipe(write(tmp_path, recipe))


def test_an_unregistered_generator_is_not_a_step(tmp_path):
    recipe = {"name": "toys", "dataset": {"path": str(tmp_path / "ds")}, "steps": [{"generator": "toy"}]}
    with pytest.raises(ConfigFileError, match="toy"):
        load_recipe(write(tmp_path, recipe))
