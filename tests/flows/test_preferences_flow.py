"""The preference-pairs flow on a scripted engine (pairs, rejects, resume after a crash, a dataset
as source, the registry, the CLI and the DPO export), and through the real engine."""

from __future__ import annotations

import json

import polars as pl
import pytest
from typer.testing import CliRunner

from synth.cli import app
from synth.engines import ChatRequest, ScriptedEngine
from synth.flows.preferences import check_inputs, run_preferences
from synth.generators.preferences import GRADE, RESPONSE
from synth.generators.sources import SourceError
from synth.registry import GENERATORS
from synth.schemas import DatasetConfig, ScriptedEngineConfig
from synth.schemas.preferences import PreferencesConfig
from synth.shards import read_manifest, scan, verify

pytestmark = pytest.mark.usefixtures("prefect_harness")

PROMPTS = [f"Describe landmark number {i} of the old town in a few sentences." for i in range(7)]


class Graded:
    """Response n is "Reply n: ..." and is graded n + 2, except on prompts whose number is divisible
    by 3, where every response gets 3 (a tie). `fail_on` makes the responses to that prompt raise
    (a crash in the middle of a run)."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.fail_on = fail_on
        self.counts: dict[str, int] = {}
        self.responses: list[str] = []

    def __call__(self, request: ChatRequest) -> str:
        if request.tag == RESPONSE:
            prompt = request.messages[-1].content
            if prompt == self.fail_on:
                raise RuntimeError("the engine went away")
            n = self.counts[prompt] = self.counts.get(prompt, -1) + 1
            self.responses.append(prompt)
            return f"Reply {n}: the landmark in that prompt ({prompt[-40:]}) is worth a visit for reasons {n}."
        assert request.tag == GRADE
        text = request.messages[0].content
        n = int(text.split("Reply ", 1)[1].split(":", 1)[0])
        tie = any(f"landmark number {i} " in text for i in (0, 3, 6))
        return json.dumps({"rationale": "graded", "score": 3 if tie else min(5, n + 2)})


def write_source(tmp_path) -> str:
    path = tmp_path / "instructions.jsonl"
    path.write_text("".join(json.dumps({"id": f"q{i}", "instruction": p}) + "\n" for i, p in enumerate(PROMPTS)))
    return str(path)


def run(tmp_path, source: str, script: Graded, **config) -> dict:
    return run_preferences(
        PreferencesConfig(source=source, chunk_size=3, judge_samples=1, **config),
        ScriptedEngineConfig(),
        DatasetConfig(path=str(tmp_path / "pairs")),
        model=ScriptedEngine(script),
        batch_retries=0,
    )


def test_a_run_writes_pairs_and_tie_rejects_and_resumes_after_a_crash_without_redoing_a_chunk(tmp_path):
    source = write_source(tmp_path)
    crashing = Graded(fail_on=PROMPTS[4])  # in the second chunk
    with pytest.raises(Exception, match="the engine went away"):
        run(tmp_path, source, crashing)
    manifest = read_manifest(tmp_path / "pairs")
    (info,) = manifest.runs.values()
    assert info.batches_done == 1 and info.state["pairs"] == {"instructions": 3, "paired": 2}

    resumed = Graded()
    summary = run(tmp_path, source, resumed)
    assert summary["run_id"] == info.run_id and verify(tmp_path / "pairs") == []
    assert set(resumed.responses) == set(PROMPTS[3:])  # the committed chunk is not sampled again
    assert summary["pairs"] == {"instructions": 7, "paired": 4}
    kept = scan(tmp_path / "pairs").collect()
    rejects = scan(tmp_path / "pairs", "rejects").collect()
    assert sorted(kept["source_id"]) == ["q1", "q2", "q4", "q5"]
    assert sorted(rejects["source_id"]) == ["q0", "q3", "q6"]  # each instruction written once
    assert set(rejects["reason"]) == {"tie"} and set(rejects["phase"]) == {"generation"}
    row = kept.row(0, named=True)
    assert row["preferences"]["chosen"].startswith("Reply 3:") and row["preferences"]["rejected"].startswith("Reply 0:")
    assert (row["preferences"]["chosen_score"], row["preferences"]["rejected_score"]) == (5.0, 2.0) and row[
        "output"
    ] == row["preferences"]["chosen"]

    again = run(tmp_path, source, Graded())  # a finished run: nothing new
    assert again["batches"] == summary["batches"] and scan(tmp_path / "pairs").collect().height == 4


def test_pairs_made_from_a_dataset_point_to_their_source_records(tmp_path, small_dataset):
    summary = run(tmp_path, str(small_dataset), Graded(), limit=3, samples=2)
    kept = scan(tmp_path / "pairs").collect()
    source_ids = set(scan(small_dataset).select("id").collect()["id"])
    assert summary["pairs"]["paired"] == kept.height > 0
    assert set(kept["parent_id"]) <= source_ids and kept["parent_id"].to_list() == kept["source_id"].to_list()


def test_the_source_must_not_be_the_output_dataset(small_dataset):
    with pytest.raises(SourceError, match="another dataset"):
        check_inputs(PreferencesConfig(source=str(small_dataset)), small_dataset)


def test_preferences_is_one_registry_entry():
    entry = GENERATORS["preferences"]
    assert entry.config is PreferencesConfig and entry.flow.name == "preferences"


def test_the_cli_writes_pairs_that_export_for_trl_dpo_and_the_card_describes_them(tmp_path):
    from datasets import load_dataset
    from trl.data_utils import is_conversational, maybe_apply_chat_template

    from synth.engines.embedded import ensure_embedded_model

    engine = tmp_path / "engine.json"
    engine.write_text(json.dumps({"kind": "scripted", "responder": "tests.flows.test_preferences_flow:Graded"}))
    out = tmp_path / "pairs"
    args = ["generate", "preferences", "--from", write_source(tmp_path), "--out", str(out)]
    args += ["--engine-config", str(engine), "--judge-samples", "1", "--system-prompt", "Be brief."]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "4 of 7 instructions paired" in result.output
    assert "## Preference pairs" in (out / "README.md").read_text()

    exported = tmp_path / "dpo.jsonl"
    result = CliRunner().invoke(app, ["export", str(out), "--format", "dpo", "--out", str(exported)])
    assert result.exit_code == 0, result.output
    rows = load_dataset("json", data_files=str(exported), split="train")
    assert rows.num_rows == 4 and set(rows.column_names) == {"id", "prompt", "chosen", "rejected"}
    example = rows[0]
    assert is_conversational(example)
    assert [m["role"] for m in example["prompt"]] == ["system", "user"]
    assert example["prompt"][0]["content"] == "Be brief."
    assert [m["role"] for m in example["chosen"]] == [m["role"] for m in example["rejected"]] == ["assistant"]
    kept = scan(out).collect().filter(pl.col("id") == example["id"])
    assert (
        example["chosen"][0]["content"]
        == kept["preferences"].struct.field("chosen")[0]
        != example["rejected"][0]["content"]
    )

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(ensure_embedded_model())
    text = maybe_apply_chat_template(example, tokenizer)  # what DPOTrainer does to each example
    assert text["prompt"].endswith("<|im_start|>assistant\n") and "Be brief." in text["prompt"]
    assert text["chosen"].startswith(kept["preferences"].struct.field("chosen")[0]) and text["rejected"].startswith(
        "Reply 0:"
    )


@pytest.mark.engine
def test_the_embedded_model_answers_grades_and_pairs_through_the_real_engine(vllm_engine):
    from synth.generators.preferences import PreferencesGenerator
    from synth.schemas import Example

    config = PreferencesConfig(
        source="unused",
        profile="small-model",
        samples=2,
        response_sampling={"temperature": 0.8, "top_p": 0.95, "max_tokens": 48},
        judge_sampling={"temperature": 0.0, "top_p": 1.0, "max_tokens": 160},
    )
    items = [Example("Name three primary colours.", id="a"), Example("What is the capital of France?", id="b")]
    result = PreferencesGenerator(config, vllm_engine, run_id="real").run_chunk(0, items)
    assert not [r for r in result.rejects if r.stage == "engine"]
    # Structured output: every grade parses; each instruction is a pair or a reject for its pairing.
    assert not [r for r in result.rejects if r.reason == "unparseable grade"], [r.raw for r in result.rejects]
    assert sorted([*(r.source_id for r in result.kept), *(r.source_id for r in result.rejects)]) == ["a", "b"]
    for pair in result.kept:
        assert pair.preferences.chosen_score is not None and pair.preferences.rejected_score is not None
        assert (
            1 <= pair.preferences.rejected_score < pair.preferences.chosen_score <= 5
            and pair.preferences.chosen != pair.preferences.rejected
        )
    for reject in result.rejects:
        assert reject.reason == "tie" and json.loads(reject.raw)


def test_the_dpo_export_of_a_dataset_without_pairs_is_empty_and_says_so(small_dataset, tmp_path):
    from synth.shards.export import export

    assert export(small_dataset, "dpo", tmp_path / "dpo.jsonl") == 0
    assert (tmp_path / "dpo.jsonl").read_text() == ""
    result = CliRunner().invoke(app, ["export", str(small_dataset), "--format", "dpo", "--out", str(tmp_path / "x")])
    assert result.exit_code == 0 and "holds no preference pairs" in " ".join(result.output.split())


def test_a_recipe_step_runs_the_preferences_generator_with_its_config(tmp_path):
    from synth.schemas.preferences import PreferencesConfig
    from synth.schemas.recipe import Recipe

    recipe = Recipe.model_validate(
        {
            "name": "pairs",
            "dataset": {"path": str(tmp_path / "pairs")},
            "steps": [{"generator": "preferences", "source": "prompts.jsonl", "samples": 3, "position_check": True}],
        }
    )
    (step,) = recipe.steps
    assert isinstance(step, PreferencesConfig) and step.generator == "preferences"
    assert step.samples == 3 and step.position_check
    assert step.input_paths() == {"source": "prompts.jsonl"}
