"""The Evol-Instruct flow on a scripted engine: chunks, round 0 and the per-round funnel, resume, the CLI."""

from __future__ import annotations

import json

import polars as pl
import pytest
from typer.testing import CliRunner

from synth.cli import app
from synth.engines import ScriptedEngine
from synth.flows.evol_instruct import run_evol_instruct
from synth.schemas import DatasetConfig, EvolInstructConfig, ScriptedEngineConfig
from synth.schemas.curation import CurationConfig, MinHashConfig
from synth.shards import read_manifest, scan, verify
from tests.generators.test_evol_instruct import EvolScript

pytestmark = pytest.mark.usefixtures("prefect_harness")


def write_source(path, n: int = 5):
    path.write_text(
        "\n".join(json.dumps({"id": f"q{i}", "instruction": f"Explain topic number {i} simply."}) for i in range(n))
    )
    return path


# The script's round-2 rewrites differ from round 1's by two words: near duplicates by design.
NO_NEAR_DEDUP = CurationConfig(minhash=MinHashConfig(enabled=False))


def run(source, out, **config):
    return run_evol_instruct(
        EvolInstructConfig(source=str(source), **config),
        ScriptedEngineConfig(),
        DatasetConfig(path=str(out)),
        curation=NO_NEAR_DEDUP,
        model=ScriptedEngine(EvolScript()),
        batch_retries=0,
    )


def test_run_writes_the_sources_as_round_0_and_every_evolved_round_with_lineage(tmp_path):
    summary = run(write_source(tmp_path / "src.jsonl"), tmp_path / "ds", rounds=2, chunk_size=2)
    assert summary["batches"] == 3 and summary["kept"] == 15
    rounds = read_manifest(tmp_path / "ds").runs[summary["run_id"]].state["rounds"]
    assert rounds == {str(n): {"in": 5, "evolved": 5, "eliminated": {}} for n in range(3)}
    assert summary["rounds"] == rounds
    kept = scan(tmp_path / "ds").collect()
    assert kept.group_by("round").len().sort("round").rows() == [(0, 5), (1, 5), (2, 5)]
    sources = kept.filter(pl.col("round") == 0)
    assert sorted(sources["root_id"]) == [f"q{i}" for i in range(5)] and sources["id"].n_unique() == 5
    assert (sources["operation"] == "source").all() and sources["parent_id"].is_null().all()
    # The sources have no output: each got the model's response.
    assert (sources["output"] == "A full answer with real content.").all()
    by_id = {r["id"]: r for r in kept.iter_rows(named=True)}
    for record in kept.filter(pl.col("round") > 0).iter_rows(named=True):
        parent = by_id[record["parent_id"]]
        assert parent["round"] == record["round"] - 1 and parent["root_id"] == record["root_id"]
    assert verify(tmp_path / "ds") == []


def test_no_include_source_writes_the_evolved_rounds_alone(tmp_path):
    summary = run(write_source(tmp_path / "src.jsonl"), tmp_path / "ds", rounds=2, include_source=False)
    assert summary["kept"] == 10 and set(summary["rounds"]) == {"1", "2"}
    assert scan(tmp_path / "ds").collect()["round"].min() == 1


def test_an_alpaca_json_source_keeps_its_outputs_in_round_0(tmp_path):
    source = tmp_path / "alpaca.json"
    data = [
        {"instruction": "Sort the numbers.", "input": "5, 3, 9", "output": "3, 5, 9"},
        {"instruction": "Name a colour.", "input": "", "output": "Teal."},
    ]
    source.write_text(json.dumps(data, indent=2))
    engine = ScriptedEngine(EvolScript())
    run_evol_instruct(
        EvolInstructConfig(source=str(source), rounds=1),
        ScriptedEngineConfig(),
        DatasetConfig(path=str(tmp_path / "ds")),
        curation=NO_NEAR_DEDUP,
        model=engine,
        batch_retries=0,
    )
    zero = scan(tmp_path / "ds").filter(pl.col("round") == 0).sort("instruction").collect()
    assert zero.select("instruction", "input", "output").rows() == [
        ("Name a colour.", "", "Teal."),
        ("Sort the numbers.", "5, 3, 9", "3, 5, 9"),
    ]
    # No response was asked for round 0, and the input is shown with the instruction to evolve it.
    answered = [r.messages[-1].content for call in engine.calls for r in call if r.tag == "evol_response"]
    assert len(answered) == 2 and not {"Name a colour.", "Sort the numbers.\n\n5, 3, 9"} & set(answered)
    evolve = [
        r.messages[-1].content for call in engine.calls for r in call if r.tag not in ("evol_equality", "evol_response")
    ]
    assert any("#Given Prompt#:\nSort the numbers.\n\n5, 3, 9\n" in p for p in evolve)


def test_rerun_skips_committed_chunks(tmp_path):
    source = write_source(tmp_path / "src.jsonl")
    first = run(source, tmp_path / "ds", rounds=1, chunk_size=2)
    engine = ScriptedEngine(EvolScript())
    again = run_evol_instruct(
        EvolInstructConfig(source=str(source), rounds=1, chunk_size=2),
        ScriptedEngineConfig(),
        DatasetConfig(path=str(tmp_path / "ds")),
        curation=NO_NEAR_DEDUP,
        model=engine,
    )
    assert engine.calls == [] and again["kept"] == first["kept"] == 10
    kept = scan(tmp_path / "ds").collect()
    assert kept.height == kept["id"].n_unique() == first["kept"]
    assert kept.filter(pl.col("round") == 0).height == 5  # the sources, committed once


def test_a_run_cut_short_resumes_without_writing_round_0_twice(tmp_path):
    source = write_source(tmp_path / "src.jsonl")
    calls = {"n": 0}

    def dies_in_the_second_chunk(request):
        calls["n"] += 1
        if request.tag == "evol_response" and "number 2 " in request.messages[-1].content:
            raise RuntimeError("engine died")
        return EvolScript()(request)

    with pytest.raises(RuntimeError, match="engine died"):
        run_evol_instruct(
            EvolInstructConfig(source=str(source), rounds=1, chunk_size=2),
            ScriptedEngineConfig(),
            DatasetConfig(path=str(tmp_path / "ds")),
            curation=NO_NEAR_DEDUP,
            model=ScriptedEngine(dies_in_the_second_chunk),
            batch_retries=0,
        )
    assert scan(tmp_path / "ds").collect().height == 4  # chunk 0: two sources and their evolutions
    summary = run(source, tmp_path / "ds", rounds=1, chunk_size=2)
    kept = scan(tmp_path / "ds").collect()
    assert summary["kept"] == kept.height == kept["id"].n_unique() == 10
    assert sorted(kept.filter(pl.col("round") == 0)["root_id"]) == [f"q{i}" for i in range(5)]


def test_evolving_a_dataset_links_back_to_its_records(tmp_path, small_dataset):
    summary = run(small_dataset, tmp_path / "evolved", rounds=1, limit=4)
    source = scan(small_dataset).collect()
    written = scan(tmp_path / "evolved").collect()
    assert written.height == summary["kept"] == 8
    evolved, zero = written.filter(pl.col("round") == 1), written.filter(pl.col("round") == 0)
    assert set(evolved["parent_id"]) == set(evolved["root_id"]) == set(zero["id"]) <= set(source["id"])
    # Round 0 is the source records as they were.
    assert (
        zero.join(source, on="id")
        .filter((pl.col("instruction") != pl.col("instruction_right")) | (pl.col("output") != pl.col("output_right")))
        .is_empty()
    )


def test_evolving_a_dataset_into_itself_writes_no_round_0(tmp_path, small_dataset):
    before = scan(small_dataset).collect().height
    summary = run(small_dataset, small_dataset, rounds=1, limit=4)
    assert summary["kept"] == 4 and set(summary["rounds"]) == {"1"}
    assert scan(small_dataset).collect().height == before + 4


def test_cli_include_source_and_profile_options(tmp_path, monkeypatch):
    import synth.flows.evol_instruct as evol_module

    seen = []
    monkeypatch.setattr(evol_module, "run_job", lambda job, *a, **k: seen.append(job.config) or {})
    source = write_source(tmp_path / "src.jsonl")
    engine = tmp_path / "engine.yaml"
    engine.write_text("kind: scripted\n")
    args = ["generate", "evol", "--from", str(source), "--out", str(tmp_path / "o"), "--engine-config", str(engine)]
    for flags, include, profile in (
        ([], True, "paper"),
        (["--no-include-source"], False, "paper"),
        (["--include-source", "--profile", "small-model"], True, "small-model"),
    ):
        CliRunner().invoke(app, [*args, *flags])  # the fake run's empty summary ends the command
        config = seen.pop()
        assert (config.include_source, config.profile) == (include, profile)
    assert config.evolve_sampling.max_tokens == 384


def test_cli_reports_a_bad_source_with_its_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "fine"}\n{"nope": 1}\n')
    result = CliRunner().invoke(app, ["generate", "evol", "--from", str(bad), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert f"{bad}:2: no 'instruction'" in result.output


def test_paper_profile_keeps_sources_about_graphs_music_diagrams_and_maps_as_round_0(tmp_path):
    """The default chain in `paper` removes duplicates only: the heuristics' non-text words and
    extra refusal phrases (ours) do not drop topics the paper keeps."""
    rows = [
        {
            "id": "g",
            "instruction": "Explain what a graph is in graph theory.",
            "output": "A set of vertices and edges.",
        },
        {"id": "m", "instruction": "Recommend some music for studying.", "output": "Quiet piano or lo-fi beats."},
        {"id": "d", "instruction": "Describe a Venn diagram.", "output": "Overlapping circles showing shared items."},
        {
            "id": "p",
            "instruction": "How do I read a topographic map?",
            "output": "Contour lines join points of equal height.",
        },
        {"id": "r", "instruction": "Say no politely to a meeting.", "output": "I'm unable to attend, sorry."},
    ]
    source = tmp_path / "src.jsonl"
    source.write_text("\n".join(json.dumps(r) for r in rows))
    summary = run_evol_instruct(
        EvolInstructConfig(source=str(source), rounds=1),
        ScriptedEngineConfig(),
        DatasetConfig(path=str(tmp_path / "ds")),
        model=ScriptedEngine(EvolScript()),
        batch_retries=0,
    )
    zero = scan(tmp_path / "ds").filter(pl.col("round") == 0).collect()
    assert sorted(zero["root_id"]) == ["d", "g", "m", "p", "r"]
    assert summary["rejects_by_reason"].get("heuristic") is None


def test_a_record_the_curation_rules_drop_is_not_evolved_further(tmp_path):
    """With the heuristics on (small-model, or set), a round-1 record they drop leaves its parent in
    the pool: round 2 evolves the parent again, never the dropped record."""
    source = write_source(tmp_path / "src.jsonl", n=2)

    dropped = []

    def responder(request):
        text = request.messages[-1].content
        if request.tag == "evol_response" and "Explain topic number 0" in text and not dropped:
            dropped.append(text)
            return "TODO"  # a placeholder answer for round 1 of q0: the heuristics drop it
        return EvolScript()(request)

    config = CurationConfig(minhash=MinHashConfig(enabled=False))
    config.heuristics.enabled = True
    summary = run_evol_instruct(
        EvolInstructConfig(source=str(source), rounds=2, include_source=False),
        ScriptedEngineConfig(),
        DatasetConfig(path=str(tmp_path / "ds")),
        curation=config,
        model=ScriptedEngine(responder),
        batch_retries=0,
    )
    kept = scan(tmp_path / "ds").filter(pl.col("root_id") == "q0").collect()
    rejects = scan(tmp_path / "ds", "rejects").filter(pl.col("root_id") == "q0").collect()
    assert rejects.select("round", "stage", "phase").rows() == [(1, "heuristic", "curation")]
    [second] = kept.rows(named=True)
    assert second["round"] == 2 and second["parent_id"] == "q0"  # evolved from the source, not the drop
    assert summary["rounds"]["1"]["eliminated"] == {"heuristic: empty or placeholder output": 1}
