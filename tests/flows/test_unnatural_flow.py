"""Unnatural Instructions through the shared runner: `synth generate unnatural` in-process, a run
whose commit fails resumes without making a finished batch again or writing a record twice, and a
fixed-seed run writes exactly the pinned records."""

from __future__ import annotations

import errno
import json

import polars as pl
import pytest
from typer.testing import CliRunner

from synth.engines import ScriptedEngine
from synth.flows.unnatural import run_unnatural
from synth.schemas import DatasetConfig, ScriptedEngineConfig
from synth.schemas.unnatural import UnnaturalConfig
from synth.shards import read_manifest, scan, verify
from tests.faults.test_commit_faults import Replay, fail_first_commit, outcome
from tests.flows.test_pins import digest
from tests.generators.test_unnatural import DUPLICATE, reply

pytestmark = pytest.mark.usefixtures("prefect_harness")
ENGINE = {"kind": "scripted", "responder": "tests.generators.test_unnatural:responder"}


def run(out, engine=None, retries=1, **changes):
    cfg = UnnaturalConfig(**{"num_records": 12, "batch_size": 4, "seed": 5, **changes})
    return run_unnatural(
        cfg,
        ScriptedEngineConfig(),
        DatasetConfig(path=str(out)),
        model=engine or ScriptedEngine(reply),
        batch_retries=retries,
        retry_delays=[0],
    )


def test_synth_generate_unnatural_writes_records_and_rejects(tmp_path):
    from synth.cli import app

    engine = tmp_path / "engine.json"
    engine.write_text(json.dumps(ENGINE))
    out = tmp_path / "ds"
    args = ["generate", "unnatural", "--num-records", "10", "--batch-size", "5", "--paraphrases", "1"]
    result = CliRunner().invoke(app, [*args, "--out", str(out), "--engine-config", str(engine)])
    assert result.exit_code == 0, result.output
    assert verify(out) == []
    (info,) = read_manifest(out).runs.values()
    assert info.generator == "unnatural" and info.status == "finished" and info.batches_done == 2
    kept = scan(out).collect()
    rejects = scan(out, "rejects").collect()
    assert kept.height > 0 and rejects.height > 0 and rejects["reason"].null_count() == 0
    blocks = kept["unnatural"].to_list()
    assert {b["paraphrase"] for b in blocks} == {0, 1}
    assert all(b["constraints"] for b in blocks)


def test_a_bad_seed_file_exits_2_naming_its_line_before_any_model_loads(tmp_path):
    from synth.cli import app

    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text('{"instruction": "a", "input": "b", "constraints": "c"}\n{"instruction": "a"}\n')
    engine = tmp_path / "engine.json"
    engine.write_text(json.dumps({"kind": "vllm"}))  # never loaded: the check fails first
    args = ["generate", "unnatural", "--seeds", str(seeds), "--out", str(tmp_path / "ds")]
    result = CliRunner().invoke(app, [*args, "--engine-config", str(engine)])
    assert result.exit_code == 2
    assert f"{seeds}:2" in result.output and not (tmp_path / "ds").exists()


def test_a_failed_commit_is_retried_and_each_record_is_written_once(tmp_path, monkeypatch):
    clean = run(tmp_path / "clean", ScriptedEngine(Replay(reply)))
    calls = fail_first_commit(monkeypatch, OSError(errno.EIO, "I/O error", "shard"))
    retried = run(tmp_path / "retried", ScriptedEngine(Replay(reply)))
    assert calls["n"] > 1
    assert retried["kept"] == clean["kept"] > 0
    assert outcome(tmp_path / "retried") == outcome(tmp_path / "clean")


class Crash(RuntimeError):
    pass


def test_a_run_killed_mid_way_resumes_without_making_finished_batches_again(tmp_path, monkeypatch):
    from synth.shards import DatasetWriter

    run(tmp_path / "whole")
    real, commits = DatasetWriter.commit_batch, {"n": 0}

    def dies_at_the_second_commit(self, *args, **kwargs):
        commits["n"] += 1
        if commits["n"] == 2:
            raise Crash("killed")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(DatasetWriter, "commit_batch", dies_at_the_second_commit)
    with pytest.raises(Exception):  # noqa: B017 - whatever the runner wraps the crash in
        run(tmp_path / "resumed", ScriptedEngine(reply), retries=0)
    monkeypatch.setattr(DatasetWriter, "commit_batch", real)
    assert read_manifest(tmp_path / "resumed").rows("kept") > 0
    engine = ScriptedEngine(reply)
    run(tmp_path / "resumed", engine)
    # The first batch was committed before the crash: the resumed run asks only the 8 prompts after it.
    assert sum(r.tag == "unnatural_core" for call in engine.calls for r in call) == 8
    assert digest(tmp_path / "resumed") == digest(tmp_path / "whole")
    kept = scan(tmp_path / "resumed").collect()
    assert kept.height == kept["id"].n_unique()


def test_pins_a_fixed_seed_scripted_run_writes_exactly_the_pinned_records(tmp_path):
    run(tmp_path / "ds")
    got = digest(tmp_path / "ds")
    print(f"unnatural: {got}")
    assert got == "651228994f9d71f6"


def test_a_recipe_step_writes_what_the_command_writes(tmp_path):
    """`generator: unnatural` in a recipe runs the same job as the command: the same records."""
    from synth.flows.recipe import recipe_flow
    from synth.schemas.recipe import load_recipe
    from tests.flows.test_recipe import write

    step = {"generator": "unnatural", "num_records": 6, "batch_size": 3, "paraphrases": 1, "seed": 5}
    data = {"name": "ui", "dataset": {"path": str(tmp_path / "ds")}, "engine": ENGINE, "steps": [step]}
    [summary] = recipe_flow(recipe=load_recipe(write(tmp_path, data)))
    run(tmp_path / "direct", num_records=6, batch_size=3, paraphrases=1)
    assert summary["generator"] == "unnatural" and summary["kept"] > 0

    def texts(path, kind="kept"):
        return sorted(scan(path, kind).select("instruction", "input", "output").collect().rows())

    assert texts(tmp_path / "ds") == texts(tmp_path / "direct")
    assert texts(tmp_path / "ds", "rejects") == texts(tmp_path / "direct", "rejects")


def test_an_example_repeated_in_a_later_batch_is_dropped_and_the_state_stays_two_counters(tmp_path):
    """The model repeats one example in every batch: the curation chain's dedup drops it in every
    batch after the first. The run keeps no list of keys
    that grows with it: its state is the prompts asked and the core examples made."""
    asked = {"n": 0}

    def repeats(request):  # the first prompt of each batch of 4 gets the same example
        if request.tag == "unnatural_core":
            asked["n"] += 1
            if asked["n"] % 4 == 1:
                return DUPLICATE + "\n\nExample 5"
        return reply(request)

    summary = run(tmp_path / "ds", ScriptedEngine(repeats), num_records=24)
    kept = scan(tmp_path / "ds").collect()
    cores = kept.filter(pl.col("unnatural").struct.field("paraphrase") == 0)
    assert cores.filter(pl.col("instruction").str.starts_with("Name a fruit")).height == 1
    rejects = scan(tmp_path / "ds", "rejects").collect()
    dropped = rejects.filter(pl.col("instruction").str.starts_with("Name a fruit") & (pl.col("stage") == "dedup"))
    assert summary["batches"] == 6 and set(dropped["batch"]) == {1, 2, 3, 4, 5}
    assert cores["batch"].min() < dropped["batch"].min()
    (info,) = read_manifest(tmp_path / "ds").runs.values()
    assert set(info.state) - {"tokens"} == {"asked", "cores"} and info.state["asked"] == 24


def test_a_batch_made_on_a_ray_worker_is_the_batch_made_here(tmp_path, redis_url):
    """The job as Ray ships it (pickled) makes, curates and stages on a worker the records a local
    run commits for the same batch, with its tokens counted."""
    from synth.flows.jobs import Spec
    from synth.flows.unnatural import UnnaturalJob, unnatural_run_id
    from synth.generators.unnatural import read_seed_sets
    from tests.flows.test_ray import staged_on_a_worker

    config = UnnaturalConfig(num_records=6, batch_size=6, paraphrases=1, seed=5)
    engine = ScriptedEngineConfig(responder=ENGINE["responder"])
    sets = read_seed_sets()
    job = UnnaturalJob(config, sets, unnatural_run_id(config, engine, sets))
    kept, rejects, meta = staged_on_a_worker(job, Spec(0, {"first": 0, "count": 6}), engine, redis_url, tmp_path / "ds")
    run(tmp_path / "local", num_records=6, batch_size=6, paraphrases=1)
    local = scan(tmp_path / "local").collect()
    assert sorted((r.instruction, r.input, r.output) for r in kept) == sorted(
        local.select("instruction", "input", "output").rows()
    )
    assert meta["delta"]["asked"] == 6 and meta["tokens"]["unnatural_core"]["completion"] > 0
    assert len(rejects) == scan(tmp_path / "local", "rejects").collect().height
