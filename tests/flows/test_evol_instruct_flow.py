"""The Evol-Instruct flow on a scripted engine: chunks, the per-round funnel, resume, the CLI."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from synth.engines import ScriptedEngine
from synth.flows.cli import app
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


def test_run_writes_evolved_records_and_stores_the_per_round_funnel(tmp_path):
    summary = run(write_source(tmp_path / "src.jsonl"), tmp_path / "ds", rounds=2, chunk_size=2)
    assert summary["batches"] == 3 and summary["kept"] == 10
    rounds = read_manifest(tmp_path / "ds").runs[summary["run_id"]].state["rounds"]
    assert rounds == {"1": {"in": 5, "evolved": 5, "eliminated": {}}, "2": {"in": 5, "evolved": 5, "eliminated": {}}}
    assert summary["rounds"] == rounds
    kept = scan(tmp_path / "ds").collect()
    assert set(kept["root_id"]) == {f"q{i}" for i in range(5)}
    assert verify(tmp_path / "ds") == []


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
    assert engine.calls == [] and again["kept"] == first["kept"]
    assert scan(tmp_path / "ds").collect()["id"].n_unique() == first["kept"]


def test_evolving_a_dataset_links_back_to_its_records(tmp_path, small_dataset):
    summary = run(small_dataset, tmp_path / "evolved", rounds=1, limit=4)
    source_ids = set(scan(small_dataset).collect()["id"].to_list())
    evolved = scan(tmp_path / "evolved").collect()
    assert evolved.height == summary["kept"] == 4
    assert set(evolved["parent_id"]) <= source_ids and set(evolved["root_id"]) <= source_ids


def test_cli_reports_a_bad_source_with_its_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "fine"}\n{"nope": 1}\n')
    result = CliRunner().invoke(app, ["generate", "evol", "--from", str(bad), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert f"{bad}:2: no 'instruction'" in result.output
