"""`synth recycle` (the reflection generator) as a run: chunks committed and resumed, lineage to the
source records, the command line, the card and `synth inspect`'s before and after."""

from __future__ import annotations

import json
import re

import polars as pl
import pytest
from typer.testing import CliRunner

from synth.cli import app
from synth.engines import ChatRequest, ScriptedEngine
from synth.flows.reflection import check_inputs, run_reflection
from synth.generators.reflection import INSTRUCTION
from synth.generators.sources import SourceError
from synth.registry import GENERATORS
from synth.schemas import DatasetConfig, ScriptedEngineConfig
from synth.schemas.reflection import ReflectionConfig
from synth.shards import read_manifest, scan, verify
from tests.generators.test_reflection import Teacher, scripted_student

pytestmark = pytest.mark.usefixtures("prefect_harness")


def write_source(tmp_path, n: int = 5) -> str:
    path = tmp_path / "pairs.jsonl"
    rows = [{"id": f"src-{i}", "instruction": f"old-{i}", "output": f"ans-o-{i}"} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


class Crashing(Teacher):
    """The teacher of the rule test, whose engine goes away on pair `fail_on`; it notes each pair it
    was asked about."""

    def __init__(self, fail_on: int | None = None) -> None:
        super().__init__()
        self.fail_on, self.asked = fail_on, set()

    def __call__(self, request: ChatRequest) -> str:
        text = request.messages[-1].content
        self.asked.update(i for i in range(20) if f"old-{i}\n" in text)
        if self.fail_on is not None and f"old-{self.fail_on}\n" in text:
            raise RuntimeError("the engine went away")
        return super().__call__(request)


def run(tmp_path, source: str, teacher: Teacher, **config) -> dict:
    return run_reflection(
        ReflectionConfig(source=source, chunk_size=2, **config),
        ScriptedEngineConfig(),
        DatasetConfig(path=str(tmp_path / "recycled")),
        model=ScriptedEngine(teacher),
        student=ScriptedEngine(scorer=scripted_student()),
        batch_retries=0,
    )


def test_a_run_resumes_after_a_crash_without_reflecting_on_a_committed_chunk_again(tmp_path):
    source = write_source(tmp_path)
    with pytest.raises(Exception, match="the engine went away"):
        run(tmp_path, source, Crashing(fail_on=3))  # in the second chunk
    (info,) = read_manifest(tmp_path / "recycled").runs.values()
    assert info.batches_done == 1 and info.state["recycled"]["pairs"] == 2

    resumed = Crashing()
    summary = run(tmp_path, source, resumed)
    assert summary["run_id"] == info.run_id and verify(tmp_path / "recycled") == []
    assert resumed.asked == {2, 3, 4}  # the committed chunk is not asked again
    assert summary["recycled"] == {"pairs": 5, "written instruction+response": 1, "written response": 1}
    kept = scan(tmp_path / "recycled").collect()
    assert sorted(kept["parent_id"]) == ["src-0", "src-2"]
    assert kept.filter(pl.col("parent_id") == "src-0")["reflection"].struct.field("variant").item() == (
        "instruction+response"
    )
    rejects = scan(tmp_path / "recycled", "rejects").collect()
    assert set(rejects["stage"]) == {"reflection"} and (rejects["reason"] != "").all()
    assert rejects["reflection"].struct.field("r_ifd").is_not_null().all()  # scores on every reject too
    every = sorted(set(kept["parent_id"]) | set(rejects["parent_id"]))
    assert every == [f"src-{i}" for i in range(5)]
    again = run(tmp_path, source, Teacher())  # finished: nothing new
    assert again["batches"] == summary["batches"] and scan(tmp_path / "recycled").collect().height == 2


def test_pairs_recycled_from_a_dataset_point_to_their_source_records(tmp_path, small_dataset):
    summary = run(tmp_path, str(small_dataset), wordy_teacher(), selection="none", limit=3)
    kept = scan(tmp_path / "recycled").collect()
    source = scan(small_dataset).select("id", "instruction").collect()
    assert summary["recycled"]["pairs"] == 3 and kept.height == 3
    originals = dict(zip(source["id"], source["instruction"], strict=True))
    for parent, before in zip(kept["parent_id"], kept["reflection"].struct.field("original_instruction"), strict=True):
        assert originals[parent] == before


def test_the_source_must_not_be_the_output_dataset_and_must_hold_a_response(tmp_path, small_dataset):
    with pytest.raises(SourceError, match="another dataset"):
        check_inputs(ReflectionConfig(source=str(small_dataset)), small_dataset)
    bare = tmp_path / "bare.jsonl"
    bare.write_text('{"instruction": "Name a colour."}\n')
    with pytest.raises(SourceError, match="none with a response"):
        check_inputs(ReflectionConfig(source=str(bare)), tmp_path / "out")


def test_reflection_is_one_registry_entry():
    entry = GENERATORS["reflection"]
    assert entry.config is ReflectionConfig and entry.flow.name == "reflection"


def wordy_teacher():
    """A teacher whose better answers repeat the instruction's words, so the default scripted
    student (a word the context holds is likely) finds them easier given the instruction."""

    def reply(request: ChatRequest) -> str:
        instruction = re.search(r"\[Instruction\]\n(.*?)\n", request.messages[-1].content).group(1)  # type: ignore[union-attr]
        if request.tag == INSTRUCTION:
            return f"[New Instruction] Explain the tides, after: {instruction} [End]\n[New Answer] The moon pulls the sea. [End]"
        return f"[Better Answer] {instruction}: {instruction}, in full. [End]"

    return reply


def test_synth_recycle_writes_the_rewrites_that_the_card_describes_and_inspect_shows_before_and_after(tmp_path):
    source = tmp_path / "pairs.jsonl"
    rows = [{"instruction": f"Describe landmark {i} of the town", "output": f"Unrelated words {i}"} for i in range(3)]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    engine = tmp_path / "engine.json"
    engine.write_text(json.dumps({"kind": "scripted", "responder": "tests.flows.test_reflection_flow:wordy_teacher"}))
    out = tmp_path / "recycled"
    result = CliRunner().invoke(app, ["recycle", str(source), "--out", str(out), "--engine-config", str(engine)])
    assert result.exit_code == 0, result.output
    assert "recycled: 3 source pairs read; written: 3 response" in result.output
    kept = scan(out).collect()
    assert kept["instruction"].to_list() == [r["instruction"] for r in rows]
    assert kept["output"].to_list() == [f"{r['instruction']}: {r['instruction']}, in full." for r in rows]
    assert "## Recycled pairs" in (out / "README.md").read_text()
    shown = CliRunner().invoke(app, ["inspect", str(out)], env={"COLUMNS": "200"})
    assert shown.exit_code == 0 and "Recycled records, before and after" in shown.output
    assert "Unrelated words" in shown.output  # the output before


def test_a_recipe_step_recycles_a_file_into_the_recipes_dataset(tmp_path):
    import yaml

    from synth.flows.recipe import recipe_flow
    from synth.schemas.recipe import load_recipe

    recipe = {
        "name": "recycle",
        "dataset": {"path": str(tmp_path / "ds")},
        "engine": {"kind": "scripted", "responder": "tests.flows.test_reflection_flow:wordy_teacher"},
        "steps": [{"generator": "reflection", "source": write_source(tmp_path, 3), "chunk_size": 2}],
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    (summary,) = recipe_flow(recipe=load_recipe(path))
    assert summary["generator"] == "reflection" and summary["recycled"]["pairs"] == 3
    (run_info,) = read_manifest(tmp_path / "ds").runs.values()
    assert run_info.generator == "reflection" and run_info.batches_done == 2
