"""A generator's prompt templates are named once: every template it loads is hashed into its run id,
so editing any of them starts a new run instead of resuming one written with the old prompts."""

from __future__ import annotations

import json

import pytest

import synth.prompts as prompts
from synth.engines import ScriptedEngine
from synth.flows.backtranslation import backtranslation_run_id
from synth.flows.evol_instruct import evol_run_id
from synth.flows.preferences import preferences_run_id
from synth.flows.self_instruct import self_instruct_run_id
from synth.generators import backtranslation, evol_instruct, preferences, self_instruct
from synth.generators.seed_pairs import load_seed_pairs
from synth.generators.seeds import load_seed_tasks
from synth.schemas import (
    BacktranslationConfig,
    EvolInstructConfig,
    Example,
    ScriptedEngineConfig,
    SelfInstructConfig,
)
from synth.schemas.preferences import PreferencesConfig

ENGINE = ScriptedEngineConfig()
ITEMS = [Example(id="a", instruction="Explain rain.")]


def _self_instruct(config_update):
    config = SelfInstructConfig(**config_update)
    seeds = load_seed_tasks()
    return (
        lambda: self_instruct.SelfInstructGenerator(config, ScriptedEngine(lambda r: ""), seeds),
        lambda: self_instruct_run_id(config, ENGINE, seeds),
        self_instruct.TEMPLATES,
    )


def _evol(config_update):
    config = EvolInstructConfig(source="x", **config_update)
    return (
        lambda: evol_instruct.EvolInstructGenerator(config, ScriptedEngine(lambda r: "")),
        lambda: evol_run_id(config, ENGINE, ITEMS),
        evol_instruct.TEMPLATES,
    )


def _backtranslation(config_update):
    config = BacktranslationConfig(docs="x", **config_update)
    seeds = load_seed_pairs(None)
    return (
        lambda: backtranslation.BacktranslationGenerator(config, ScriptedEngine(lambda r: ""), seeds.pairs),
        lambda: backtranslation_run_id(config, ENGINE, None, seeds),
        backtranslation.TEMPLATES,
    )


def _preferences(config_update):
    config = PreferencesConfig(source="x", **config_update)
    return (
        lambda: preferences.PreferencesGenerator(config, ScriptedEngine(lambda r: ""), "p", writers=[]),
        lambda: preferences_run_id(config, ENGINE, ITEMS),
        preferences.TEMPLATES,
    )


CASES = {
    "self_instruct": (_self_instruct, [{}, {"classify_question": "open-ended"}]),
    "evol_instruct": (_evol, [{}]),
    "backtranslation": (_backtranslation, [{}]),
    "preferences": (_preferences, [{}]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_template_a_generator_loads_is_hashed_into_its_run_id(name, monkeypatch):
    make_case, variants = CASES[name]
    real = prompts.load_template
    for update in variants:
        build, rid, declared = make_case(update)
        loaded: list[str] = []

        def recording(template: str, language: str = "en", loaded=loaded) -> prompts.Template:
            loaded.append(template)
            return real(template, language)

        monkeypatch.setattr(prompts, "load_template", recording)
        build()
        assert loaded and set(loaded) <= set(declared.names), json.dumps(loaded)
        before = rid()
        for template in loaded:  # an edit to any template the generator uses gives another run id

            def edited(t: str, language: str = "en", changed=template) -> prompts.Template:
                original = real(t, language)
                return prompts.Template(original.name, original.text + " (edited)") if t == changed else original

            monkeypatch.setattr(prompts, "load_template", edited)
            assert rid() != before, template
        monkeypatch.setattr(prompts, "load_template", real)
