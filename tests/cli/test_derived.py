"""A generator in the registry without a command of its own still gets one, built from its config."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from synth import registry
from synth.cli import generate
from synth.cli.derived import generator_command
from synth.cli.errors import ReportingGroup
from synth.registry import GENERATORS, Generator

pytestmark = pytest.mark.usefixtures("prefect_harness")

# Evol-Instruct under another name and without its hand-written command: what a new generator is.
COPY = Generator(
    "evol_copy",
    "synth.schemas:EvolInstructConfig",
    "synth.flows.evol_instruct:evol_instruct_flow",
    "synth.generators.evol_instruct:check_inputs",
)


@pytest.fixture
def cli(monkeypatch, tmp_path):
    """An app holding only the built command, whose flow records the config it is given."""
    import synth.flows.evol_instruct as evol_module

    monkeypatch.setitem(registry.GENERATORS, COPY.name, COPY)
    seen: list = []
    monkeypatch.setattr(evol_module, "run_job", lambda job, *a, **k: seen.append(job.config) or {})
    app = typer.Typer(cls=ReportingGroup)  # errors reported as by `synth`
    app.callback()(lambda: None)  # a group, so the command is called by its name
    app.command("evol-copy")(generator_command(COPY, generate._run))
    source = tmp_path / "src.jsonl"
    source.write_text("\n".join(json.dumps({"instruction": f"Explain topic {i}."}) for i in range(3)) + "\n")
    engine = tmp_path / "engine.yaml"
    engine.write_text("kind: scripted\n")
    base = ["evol-copy", "--source", str(source), "--out", str(tmp_path / "o"), "--engine-config", str(engine)]
    return app, base, seen


def test_given_options_reach_the_config_and_left_out_ones_take_the_profile_defaults(cli, tmp_path):
    app, base, seen = cli
    # the fake run's empty summary ends the command, after the flow has its config
    CliRunner().invoke(app, [*base, "--rounds", "2", "--no-include-source", "--profile", "small-model"])
    [config] = seen
    assert config.source == base[2] and config.rounds == 2 and config.include_source is False
    assert config.profile == "small-model" and config.prefill_evolution is True  # the profile's
    assert config.chunk_size == 256 and config.limit is None  # the config's own defaults
    CliRunner().invoke(app, base)
    assert seen[-1].profile == "paper" and seen[-1].prefill_evolution is False and seen[-1].rounds == 4


def test_the_options_are_the_single_value_fields_with_their_bounds_and_requirements(cli):
    app, base, seen = cli
    help_text = CliRunner().invoke(app, ["evol-copy", "--help"], env={"COLUMNS": "250"}).output
    for flag in ("--source", "--rounds", "--chunk-size", "--include-source", "--prefill-evolution", "--profile"):
        assert flag in help_text
    assert "--evolve-sampling" not in help_text  # a nested setting: a recipe sets it
    assert "small-model: True)" in help_text  # what the profile changes is shown
    assert CliRunner().invoke(app, [*base, "--rounds", "0"]).exit_code == 2  # ge=1
    CliRunner().invoke(app, [*base, "--system-prompt", "x", "--limit", "2", "--chunk-size", "3"])
    assert seen.pop().chunk_size == 3  # accepted values pass through
    refused = CliRunner().invoke(app, [*base, "--profile", "tiny"])
    assert refused.exit_code == 2 and "--profile: Input should be 'paper' or 'small-model'" in refused.output
    assert CliRunner().invoke(app, base[:1] + base[3:]).exit_code == 2  # --source is required
    bad = CliRunner().invoke(app, [*base[:2], str(base[2]) + ".missing", *base[3:]])
    assert bad.exit_code == 2 and f"{base[2]}.missing: no such file" in bad.output  # checked before any model
    assert seen == []


def test_synth_generate_has_a_command_for_every_registry_entry_built_when_asked_for(monkeypatch):
    from synth.cli import app

    assert set(generate.CUSTOM) <= set(GENERATORS)
    monkeypatch.setitem(registry.GENERATORS, COPY.name, COPY)
    listing = CliRunner().invoke(app, ["generate", "--help"], env={"COLUMNS": "200"}).output
    for name in ("self-instruct", "evol", "backtranslate", "magpie", "preferences", "evol-copy"):
        assert f" {name} " in listing
    help_text = CliRunner().invoke(app, ["generate", "evol-copy", "--help"], env={"COLUMNS": "200"}).output
    assert "--source" in help_text and "--rounds" in help_text
    assert CliRunner().invoke(app, ["generate", "no-such"]).exit_code == 2
