"""Pins: a fixed-seed scripted run of each generator gives exactly the records it gave when the pin
was set. A refactor that changes what any generator writes fails here; a change of output made on
purpose updates the pin (print the new digest with `pytest -k pins -s`) and says why."""

from __future__ import annotations

import hashlib
import json

import polars as pl
import pytest

from synth.engines import ScriptedEngine
from synth.flows.backtranslation import run_backtranslation
from synth.flows.evol_instruct import run_evol_instruct
from synth.flows.self_instruct import run_self_instruct
from synth.schemas import (
    BacktranslationConfig,
    DatasetConfig,
    EvolInstructConfig,
    ScriptedEngineConfig,
    SelfInstructConfig,
)
from synth.shards import scan
from tests.conftest import SelfInstructScript
from tests.flows.test_backtranslation_flow import corpus, scores_by_topic
from tests.generators.test_backtranslation import Script as BacktranslationScript
from tests.generators.test_evol_instruct import EvolScript

pytestmark = pytest.mark.usefixtures("prefect_harness")

_COLUMNS = ["id", "batch", "generator", "instruction", "input", "output", "parent_id", "round", "operation"]


def digest(path) -> str:
    """What a run wrote, independent of time: every kept record and reject, sorted."""
    kept = scan(path).select(_COLUMNS).collect()
    rejects = scan(path, "rejects").select([*_COLUMNS, "stage", "reason"]).collect()
    rows = sorted(map(json.dumps, kept.with_columns(pl.lit("kept").alias("stage"), pl.lit("").alias("reason")).rows()))
    rows += sorted(map(json.dumps, rejects.rows()))
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16]


def self_instruct(tmp_path):
    run_self_instruct(
        SelfInstructConfig(num_records=20, prompts_per_batch=3, seed=7),
        ScriptedEngineConfig(),
        DatasetConfig(path=str(tmp_path / "ds")),
        model=ScriptedEngine(SelfInstructScript()),
        batch_retries=0,
    )


def evol(tmp_path):
    source = tmp_path / "src.jsonl"
    source.write_text(
        "\n".join(json.dumps({"id": f"q{i}", "instruction": f"Explain topic {i} simply."}) for i in range(5))
    )
    run_evol_instruct(
        EvolInstructConfig(source=str(source), rounds=2, chunk_size=2, seed=3),
        ScriptedEngineConfig(),
        DatasetConfig(path=str(tmp_path / "ds")),
        model=ScriptedEngine(EvolScript()),
        batch_retries=0,
    )


def backtranslation(tmp_path):
    grade = scores_by_topic({"rain", "tides", "fog"})
    run_backtranslation(
        BacktranslationConfig(docs=str(corpus(tmp_path / "docs")), min_chars=60, chunk_size=2, rounds=2, seed=5),
        ScriptedEngineConfig(),
        DatasetConfig(path=str(tmp_path / "ds")),
        model=ScriptedEngine(BacktranslationScript(grade)),
        batch_retries=0,
    )


def magpie(tmp_path):
    from synth.engines.base import ChatTemplate
    from synth.flows.magpie import run_magpie
    from synth.schemas.magpie import MagpieConfig
    from tests.flows.test_magpie_flow import Counting
    from tests.generators.test_magpie import ChatML

    run_magpie(
        MagpieConfig(num_records=6, batch_size=4, turns=2, seed=4),
        ScriptedEngineConfig(),
        DatasetConfig(path=str(tmp_path / "ds")),
        model=ScriptedEngine(Counting(), template=ChatTemplate(ChatML())),
        batch_retries=0,
    )


def preferences(tmp_path):
    from synth.flows.preferences import run_preferences
    from synth.schemas.preferences import PreferencesConfig
    from tests.flows.test_preferences_flow import Graded, write_source

    run_preferences(
        PreferencesConfig(source=write_source(tmp_path), chunk_size=3, judge_samples=2, seed=5),
        ScriptedEngineConfig(),
        DatasetConfig(path=str(tmp_path / "ds")),
        model=ScriptedEngine(Graded()),
        batch_retries=0,
    )


def reflection(tmp_path):
    from synth.flows.reflection import run_reflection
    from synth.schemas.reflection import ReflectionConfig
    from tests.flows.test_reflection_flow import write_source
    from tests.generators.test_reflection import Teacher, scripted_student

    run_reflection(
        ReflectionConfig(source=write_source(tmp_path, 6), chunk_size=2),
        ScriptedEngineConfig(),
        DatasetConfig(path=str(tmp_path / "ds")),
        model=ScriptedEngine(Teacher()),
        student=ScriptedEngine(scorer=scripted_student()),
        batch_retries=0,
    )


PINS = {
    # The reference's selection rule, row by row (tests/generators/test_reflection.py's RULE).
    "reflection": (reflection, "3f89061ea2eb5fd0"),
    # In the paper profile the chain no longer runs our heuristics; two-turn conversations that fail
    # at turn 2 keep their first turn.
    "magpie": (magpie, "75f54da103131e29"),
    "preferences": (preferences, "97cf3ec4fca30448"),
    # The seed tasks' instances are written as their own run; the reference's task-list header,
    # instance prompts and classification rule; no heuristics in the paper profile's chain.
    "self_instruct": (self_instruct, "3beb9cb4e0aa554b"),
    "evol_instruct": (evol, "5d5c899797fc21b2"),
    # Self-grading rejects are of stage "self-curation" (was "curation", the chain's phase name).
    "backtranslation": (backtranslation, "d5bd95cee1d89b5c"),
}


@pytest.mark.parametrize("generator", sorted(PINS))
def test_pins_a_fixed_seed_scripted_run_writes_exactly_the_pinned_records(tmp_path, generator):
    run, pinned = PINS[generator]
    run(tmp_path)
    got = digest(tmp_path / "ds")
    print(f"{generator}: {got}")
    assert got == pinned
