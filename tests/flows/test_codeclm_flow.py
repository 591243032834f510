"""CodecLM through the shared runner: `synth generate codeclm` in-process with a target engine of its
own, a bad seed file failing before any model loads, a run whose commit fails resumes without
writing a record twice, a run killed mid-way resumes to the uninterrupted run's records, a
fixed-seed run writes exactly the pinned records, and a recipe step writes what the run writes."""

from __future__ import annotations

import errno
import json

import pytest
from typer.testing import CliRunner

from synth.engines import ScriptedEngine
from synth.flows.codeclm import run_codeclm
from synth.schemas import DatasetConfig, ScriptedEngineConfig
from synth.schemas.codeclm import CodeclmConfig
from synth.shards import read_manifest, scan, verify
from tests.faults.test_commit_faults import Replay, fail_first_commit, outcome
from tests.flows.test_pins import digest
from tests.generators.test_codeclm import reply, write_seeds

pytestmark = pytest.mark.usefixtures("prefect_harness")
RESPONDER = "tests.generators.test_codeclm:responder"
ENGINE = {"kind": "scripted", "responder": RESPONDER}
TARGET = {"kind": "scripted", "model": "target-model", "responder": RESPONDER}


def run(tmp_path, out, engine=None, target=None, retries=1, **changes):
    seeds = write_seeds(tmp_path)
    cfg = CodeclmConfig(**{"seeds": str(seeds), "instructions_per_metadata": 7, "chunk_size": 1, "seed": 5, **changes})
    return run_codeclm(
        cfg,
        ScriptedEngineConfig(),
        DatasetConfig(path=str(out)),
        model=engine or ScriptedEngine(reply),
        target=target or ScriptedEngine(reply, model_name="target-model"),
        batch_retries=retries,
        retry_delays=[0],
    )


def test_synth_generate_codeclm_writes_records_and_rejects_with_a_target_engine_of_its_own(tmp_path):
    from synth.cli import app

    engine, target = tmp_path / "engine.json", tmp_path / "target.json"
    engine.write_text(json.dumps(ENGINE))
    target.write_text(json.dumps(TARGET))
    out = tmp_path / "ds"
    args = ["generate", "codeclm", "--seeds", str(write_seeds(tmp_path)), "--instructions-per-metadata", "7"]
    args += ["--chunk-size", "2", "--out", str(out), "--engine-config", str(engine)]
    result = CliRunner().invoke(app, [*args, "--target-engine-config", str(target)])
    assert result.exit_code == 0, result.output
    assert verify(out) == []
    (info,) = read_manifest(out).runs.values()
    assert info.generator == "codeclm" and info.status == "finished" and info.batches_done == 2
    assert info.state["codeclm"]["seeds"] == 3 and info.state["codeclm"]["target completion tokens"] > 0
    assert info.state["tokens"]["codeclm_judge"]["completion"] > 0  # the strong model's, metered by tag
    kept = scan(out).collect()
    rejects = scan(out, "rejects").collect()
    assert kept.height > 0 and rejects.height > 0 and rejects["reason"].null_count() == 0
    blocks = kept["codeclm"].to_list()
    assert all(b["use_case"] and b["skills"] and b["gap"] is not None for b in blocks)
    assert {b["target_model"] for b in blocks} == {"target-model"}
    contrastive = rejects.filter(rejects["stage"] == "contrastive")["codeclm"].to_list()
    assert contrastive and all(b["strong_score"] is not None and b["rounds"] == 3 for b in contrastive)


def test_a_bad_seed_file_exits_2_naming_its_line_before_any_model_loads(tmp_path):
    from synth.cli import app

    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text('{"instruction": "Plan a trip."}\n{"instruction": \n')
    engine = tmp_path / "engine.json"
    engine.write_text(json.dumps({"kind": "vllm"}))  # never loaded: the check fails first
    args = ["generate", "codeclm", "--seeds", str(seeds), "--out", str(tmp_path / "ds")]
    result = CliRunner().invoke(app, [*args, "--engine-config", str(engine)])
    assert result.exit_code == 2
    assert f"{seeds}:2" in result.output and not (tmp_path / "ds").exists()


def test_a_failed_commit_is_retried_and_each_record_is_written_once(tmp_path, monkeypatch):
    clean = run(tmp_path, tmp_path / "clean", ScriptedEngine(Replay(reply)))
    calls = fail_first_commit(monkeypatch, OSError(errno.EIO, "I/O error", "shard"))
    retried = run(tmp_path, tmp_path / "retried", ScriptedEngine(Replay(reply)))
    assert calls["n"] > 1
    assert retried["kept"] == clean["kept"] > 0
    assert outcome(tmp_path / "retried") == outcome(tmp_path / "clean")


class Crash(RuntimeError):
    pass


def test_a_run_killed_mid_way_resumes_to_the_uninterrupted_runs_records(tmp_path, monkeypatch):
    from synth.shards import DatasetWriter

    run(tmp_path, tmp_path / "whole")
    real, commits = DatasetWriter.commit_batch, {"n": 0}

    def dies_at_the_second_commit(self, *args, **kwargs):
        commits["n"] += 1
        if commits["n"] == 2:
            raise Crash("killed")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(DatasetWriter, "commit_batch", dies_at_the_second_commit)
    with pytest.raises(Exception):  # noqa: B017 - whatever the runner wraps the crash in
        run(tmp_path, tmp_path / "resumed", retries=0)
    monkeypatch.setattr(DatasetWriter, "commit_batch", real)
    assert read_manifest(tmp_path / "resumed").rows("kept") > 0
    engine = ScriptedEngine(reply)
    run(tmp_path, tmp_path / "resumed", engine)
    # The first chunk (one seed) was committed before the crash: the resumed run encodes the other two.
    assert sum(r.tag == "codeclm_encode" for call in engine.calls for r in call) == 2
    assert digest(tmp_path / "resumed") == digest(tmp_path / "whole")
    kept = scan(tmp_path / "resumed").collect()
    assert kept.height == kept["id"].n_unique()


def test_pins_a_fixed_seed_scripted_run_writes_exactly_the_pinned_records(tmp_path):
    run(tmp_path, tmp_path / "ds")
    got = digest(tmp_path / "ds")
    print(f"codeclm: {got}")
    assert got == "afebdd774363169f"


def test_a_recipe_step_writes_what_the_run_writes(tmp_path):
    """`generator: codeclm` in a recipe runs the same job as the command, its target engine a
    config of the step: the same records."""
    from synth.flows.recipe import recipe_flow
    from synth.schemas.recipe import load_recipe
    from tests.flows.test_recipe import write

    seeds = str(write_seeds(tmp_path))
    step = {"generator": "codeclm", "seeds": seeds, "instructions_per_metadata": 7, "seed": 5, "target_engine": TARGET}
    data = {"name": "codec", "dataset": {"path": str(tmp_path / "ds")}, "engine": ENGINE, "steps": [step]}
    [summary] = recipe_flow(recipe=load_recipe(write(tmp_path, data)))
    run(tmp_path, tmp_path / "direct", chunk_size=8)
    assert summary["generator"] == "codeclm" and summary["kept"] > 0

    def texts(path, kind="kept"):
        return sorted(scan(path, kind).select("instruction", "output").collect().rows())

    assert texts(tmp_path / "ds") == texts(tmp_path / "direct")
    assert texts(tmp_path / "ds", "rejects") == texts(tmp_path / "direct", "rejects")


def test_a_chunk_made_from_the_job_as_ray_ships_it_is_the_chunk_a_local_run_commits(tmp_path, redis_url):
    """The job as Ray ships it (pickled, its target engine a config the worker builds) makes,
    curates and stages the records and rejects a local run commits for the same seeds."""
    from synth.flows.codeclm import CodeclmJob, codeclm_run_id, load_seeds
    from synth.flows.jobs import Spec
    from tests.flows.test_ray import staged_on_a_worker

    seeds = str(write_seeds(tmp_path))
    config = CodeclmConfig.model_validate(
        {"seeds": seeds, "instructions_per_metadata": 7, "chunk_size": 3, "seed": 5, "target_engine": TARGET}
    )
    engine = ScriptedEngineConfig(responder=RESPONDER)
    items = load_seeds(config)
    job = CodeclmJob(config, items, codeclm_run_id(config, engine, items))
    kept, rejects, meta = staged_on_a_worker(job, Spec(0, items), engine, redis_url, tmp_path / "ds")
    run_codeclm(config, engine, DatasetConfig(path=str(tmp_path / "local")))
    local = scan(tmp_path / "local").collect()
    assert kept and sorted((r.instruction, r.output) for r in kept) == sorted(
        local.select("instruction", "output").rows()
    )
    local_rejects = scan(tmp_path / "local", "rejects").collect()
    assert sorted((r.stage, r.reason) for r in rejects) == sorted(local_rejects.select("stage", "reason").rows())
    assert {r.codeclm.target_model for r in kept} == {"target-model"}
    assert meta["tokens"] and meta["delta"]["codeclm"]["seeds"] == len(items)
