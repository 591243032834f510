"""`synth generate code` through the command line, a recipe and a SIGKILL: records that passed in the
sandbox, rejects with their execution kind, and a resumed run equal to an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from synth.flows.recipe import recipe_flow  # Prefect configures its logging here, not inside a CLI test's capture
from synth.schemas.recipe import load_recipe
from synth.shards import read_manifest, scan, verify
from tests.flows.code_script import seed_folder
from tests.flows.test_recipe import write

pytestmark = pytest.mark.usefixtures("prefect_harness")
ROOT = Path(__file__).parents[2]


def engine_file(tmp_path) -> Path:
    path = tmp_path / "engine.json"
    path.write_text(json.dumps({"kind": "scripted", "responder": "tests.flows.code_script:responder"}))
    return path


def command(tmp_path, out, num=8) -> list[str]:
    seed_folder(tmp_path / "code")
    return [
        "generate", "code", "--num", str(num), "--batch-size", "2", "--samples", "3", "--shots", "2",
        "--code", str(tmp_path / "code"), "--out", str(out), "--engine-config", str(engine_file(tmp_path)),
    ]  # fmt: skip


def contents(path: Path):
    kept = (
        scan(path)
        .select("id", "instruction", "output", pl.col("code").struct.field("tests"), "batch")
        .sort("id")
        .collect()
        .rows()
    )
    rejects = scan(path, "rejects").select("id", "stage", "reason", "batch").sort("id").collect().rows()
    return kept, rejects


def test_generate_code_keeps_answers_that_passed_in_the_sandbox(tmp_path):
    from synth.cli import app

    out = tmp_path / "ds"
    result = CliRunner().invoke(app, command(tmp_path, out))
    assert result.exit_code == 0, result.output
    assert verify(out) == []
    kept = scan(out).collect()
    assert (
        kept.height >= 8
        and set(kept["code"].struct.field("execution")) == {"passed"}
        and set(kept["code"].struct.field("tests")) == {"assert double(4) == 8"}
    )
    assert kept["output"].str.contains("return 2 * x", literal=True).all() and kept["generator"].unique().to_list() == [
        "code"
    ]
    rejects = scan(out, "rejects").collect()
    stages = Counter(zip(rejects["stage"], rejects["reason"], strict=True))
    assert stages[("execution", "assertion")] > 0 and stages[("execution", "exception")] > 0
    (run,) = read_manifest(out).runs.values()
    funnel = run.state["funnel"]
    assert funnel["kept"] == run.kept == kept.height and funnel["seeds"] == 2 * run.batches_done
    assert funnel["execution:assertion"] == stages[("execution", "assertion")]
    assert "kept" in result.output and "execution" in result.output


def test_a_missing_sandbox_stops_the_command_before_any_model_loads(tmp_path, monkeypatch):
    from synth.cli import app

    monkeypatch.setattr("synth.sandbox.shutil.which", lambda name: None)
    started = time.monotonic()
    result = CliRunner().invoke(app, command(tmp_path, tmp_path / "ds"))
    assert result.exit_code == 2
    assert "running generated code needs bubblewrap" in result.output and "apt install bubblewrap" in result.output
    assert not (tmp_path / "ds").exists() and time.monotonic() - started < 10


def test_a_recipe_step_generates_code(tmp_path):
    seed_folder(tmp_path / "code")
    recipe = {
        "name": "code",
        "dataset": {"path": str(tmp_path / "ds")},
        "engine": {"kind": "scripted", "responder": "tests.flows.code_script:responder"},
        "steps": [
            {
                "generator": "code",
                "code": str(tmp_path / "code"),
                "num_records": 4,
                "batch_size": 2,
                "samples": 2,
                "sandbox": {"timeout_s": 5, "workers": 2},
            },
        ],
    }
    (summary,) = recipe_flow(recipe=load_recipe(write(tmp_path, recipe)))
    assert summary["kept"] >= 4 and summary["funnel"]["kept"] == summary["kept"]
    assert set(scan(tmp_path / "ds").collect()["code"].struct.field("execution")) == {"passed"}


# Limits wide enough that a program start stalled by a loaded machine cannot turn a passing answer
# into a timeout in one run and not the other: these tests compare two runs' records.
PATIENT_SANDBOX = {"timeout_s": 60.0, "cpu_s": 60}


@pytest.mark.e2e
def test_sigkill_mid_run_then_rerun_equals_an_uninterrupted_run(tmp_path):
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value() or "", "PYTHONPATH": str(ROOT)}
    synth = [sys.executable, "-m", "synth.cli"]
    seed_folder(tmp_path / "code")

    def run(out: Path) -> subprocess.Popen:
        step = {"generator": "code", "code": str(tmp_path / "code"), "num_records": 12, "batch_size": 2}
        recipe = {
            "name": out.name,
            "dataset": {"path": str(out)},
            "engine": {"kind": "scripted", "responder": "tests.flows.code_script:slow_responder"},
            "steps": [step | {"samples": 3, "shots": 2, "sandbox": PATIENT_SANDBOX}],
        }
        (path := tmp_path / f"{out.name}.yaml").write_text(yaml.safe_dump(recipe))
        return subprocess.Popen([*synth, "run", str(path)], env=env, start_new_session=True, stdout=subprocess.DEVNULL)

    assert run(tmp_path / "whole").wait(timeout=300) == 0
    victim = run(tmp_path / "killed")
    deadline = time.monotonic() + 240
    manifest = tmp_path / "killed" / "manifest.json"
    while time.monotonic() < deadline:
        if manifest.exists() and any(r.batches_done >= 2 for r in read_manifest(tmp_path / "killed").runs.values()):
            break
        time.sleep(0.05)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(timeout=30)
    (run_info,) = read_manifest(tmp_path / "killed").runs.values()
    assert run_info.status == "running" and run_info.batches_done >= 2

    assert run(tmp_path / "killed").wait(timeout=300) == 0
    assert contents(tmp_path / "killed") == contents(tmp_path / "whole")
    assert verify(tmp_path / "killed") == []
    finished = contents(tmp_path / "killed")
    assert run(tmp_path / "killed").wait(timeout=300) == 0  # the same command once more: nothing to do
    assert contents(tmp_path / "killed") == finished


def test_the_next_batch_is_made_while_this_ones_programs_run_and_the_records_do_not_change(tmp_path, monkeypatch):
    from synth.engines import ScriptedEngine
    from synth.flows.code import CodeJob, run_self_code_align
    from synth.sandbox import Sandbox
    from synth.schemas import DatasetConfig, ScriptedEngineConfig
    from synth.schemas.code import SandboxConfig, SelfCodeAlignConfig
    from tests.flows.code_script import reply

    seed_folder(tmp_path / "code")
    events: list[tuple[str, float]] = []
    running = Sandbox.run_many

    def slow_run_many(self, programs):
        events.append(("programs start", time.monotonic()))
        runs = list(running(self, programs))
        time.sleep(0.5)  # long enough that the next batch's model calls land inside
        events.append(("programs end", time.monotonic()))
        return iter(runs)

    def noted(request):
        events.append((request.tag, time.monotonic()))
        return reply(request)

    monkeypatch.setattr(Sandbox, "run_many", slow_run_many)
    config = SelfCodeAlignConfig(
        code=str(tmp_path / "code"),
        num_records=100,
        batch_size=4,
        samples=2,
        max_batches=3,
        sandbox=SandboxConfig(**PATIENT_SANDBOX),
    )

    def run(out: str) -> list[tuple]:
        run_self_code_align(
            config, ScriptedEngineConfig(), DatasetConfig(path=str(tmp_path / out)), model=ScriptedEngine(noted)
        )
        return contents(tmp_path / out)

    beside = run("beside")
    first_end = next(t for name, t in events if name == "programs end")
    first_start = next(t for name, t in events if name == "programs start")
    assert any(name == "code_concepts" and first_start < t < first_end for name, t in events)

    monkeypatch.delattr(CodeJob, "next_after_generation")
    assert run("after") == beside  # the same records and rejects, made in the same batches


def test_generate_oss_instruct_writes_problems_and_runs_their_asserts_when_asked(tmp_path):
    from synth.cli import app

    seed_folder(tmp_path / "code")
    out = tmp_path / "oss"
    args = ["generate", "oss-instruct", "--num", "6", "--batch-size", "4", "--code", str(tmp_path / "code"),
            "--execute", "--out", str(out), "--engine-config", str(engine_file(tmp_path))]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert verify(out) == []
    kept, rejects = scan(out).collect(), scan(out, "rejects").collect()
    assert (
        kept.height >= 6
        and set(kept["code"].struct.field("execution")) == {"passed"}
        and set(kept["generator"]) == {"oss_instruct"}
    )
    assert kept["instruction"].str.starts_with("Write `double(x)`").all()
    stages = Counter(zip(rejects["stage"], rejects["reason"], strict=True))
    assert set(stages) == {("parse", "no [Problem Description] and [Solution] sections"), ("execution", "assertion")}
    (run,) = read_manifest(out).runs.values()
    assert run.state["funnel"]["kept"] == kept.height and run.state["funnel"]["seeds"] == 4 * run.batches_done
