"""The Magpie flow on a scripted engine (targets, resume, the registry) and on the
embedded model through the real engine."""

from __future__ import annotations

import pytest

from synth.engines import ChatRequest, ScriptedEngine
from synth.engines.base import ChatTemplate
from synth.flows.magpie import run_magpie
from synth.generators.magpie import QUERY
from synth.registry import GENERATORS
from synth.schemas import DatasetConfig, ScriptedEngineConfig
from synth.schemas.magpie import MagpieConfig
from synth.shards import read_manifest, scan, verify
from tests.generators.test_magpie import ChatML

pytestmark = pytest.mark.usefixtures("prefect_harness")


class Counting:
    """A new user message for every query (a counter keeps them distinct), answered plainly; a
    message whose number is divisible by 4 is too short."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, request: ChatRequest) -> str:
        if request.tag == QUERY:
            self.n += 1
            return " Hi" if self.n % 4 == 0 else " " + " ".join(f"topic{self.n}w{k}" for k in range(6)) + "?"
        return "A full answer about " + request.messages[-1].content


def magpie(tmp_path, num: int, script: Counting | None = None) -> dict:
    return run_magpie(
        MagpieConfig(num_records=num, batch_size=4, seed=2),
        ScriptedEngineConfig(),
        DatasetConfig(path=str(tmp_path / "ds")),
        model=ScriptedEngine(script or Counting(), template=ChatTemplate(ChatML())),
        batch_retries=0,
    )


def test_a_run_keeps_conversations_until_the_target_and_resumes_without_redoing_a_batch(tmp_path):
    summary = magpie(tmp_path, 6)
    assert summary["reached_target"] and summary["kept"] >= 6 and verify(tmp_path / "ds") == []
    kept = scan(tmp_path / "ds").collect()
    assert kept.height == summary["kept"] and set(kept["generator"]) == {"magpie"}
    rejects = scan(tmp_path / "ds", "rejects").collect()
    assert set(rejects["reason"]) == {"user message under 3 words"}
    again = magpie(tmp_path, 6)
    assert again["batches"] == summary["batches"] and scan(tmp_path / "ds").collect().height == kept.height
    more = magpie(tmp_path, 10)  # a larger target extends the same run
    assert more["run_id"] == summary["run_id"] and more["kept"] >= 10
    assert len(read_manifest(tmp_path / "ds").runs) == 1


def test_magpie_is_one_registry_entry_the_recipes_and_the_cli_find():
    entry = GENERATORS["magpie"]
    assert entry.config is MagpieConfig and entry.flow.name == "magpie"
    entry.check_inputs(MagpieConfig(), "anywhere")  # nothing to read


@pytest.mark.engine
def test_the_embedded_model_writes_user_messages_from_its_own_template(tmp_path, vllm_engine):
    from synth.generators.magpie import MagpieGenerator

    gen = MagpieGenerator(MagpieConfig(profile="small-model"), vllm_engine, run_id="real")
    assert gen.template is not None and gen.template.pre_query().endswith("<|im_start|>user\n")
    result = gen.run_batch(0, 6)
    assert len(result.kept) + len(result.rejects) == 6
    assert not [r for r in result.rejects if r.stage == "engine"]  # raw prompts reach the model
    assert result.kept, [r.reason for r in result.rejects]
    for record in result.kept:
        assert record.instruction.strip() and record.output.strip() and "<|im_" not in record.instruction


@pytest.mark.engine
def test_two_turns_at_the_papers_settings_fit_the_embedded_models_context(vllm_engine):
    from synth.generators.magpie import MagpieGenerator

    gen = MagpieGenerator(MagpieConfig(turns=2), vllm_engine, run_id="real-mt")
    assert gen.budget.scaled and gen.budget.context == 2048
    result = gen.run_batch(0, 2)
    assert len(result.kept) + len(result.rejects) == 2
    errors = [r.detail for r in result.rejects] + [r.reason for r in result.rejects]
    assert not any("context length" in e for e in errors), errors
    for record in result.kept:
        turns = [m for m in record.messages if m.role != "system"]
        assert len(turns) == 4 or (len(turns) == 2 and "fewer-turns" in record.tags)
