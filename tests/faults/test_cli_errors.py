"""Errors people can act on: every fault ends in one line on stderr naming the thing, exit 2 for
input the user can fix and 1 for a fault at run time; no traceback unless -v or SYNTH_DEBUG=1; no
empty dataset folder left behind. Everything here fails before a flow or a Prefect server starts,
and no model loads (engines are scripted, or checked without loading)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from synth.cli import app
from synth.cli.errors import describe
from synth.cli.output import print_summary
from tests.conftest import free_port

runner = CliRunner()


def synth(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, [str(a) for a in args], env=env, catch_exceptions=False)


def one_line(result, code: int, *names: str) -> str:
    """The result failed with `code` and one `error:` line naming each of `names`, no traceback."""
    text = result.output.strip()
    assert result.exit_code == code, result.output
    assert "\n" not in text and "Traceback" not in text, text
    assert text.startswith("error: "), text
    for name in names:
        assert str(name) in text, (name, text)
    return text


@pytest.fixture
def scripted(tmp_path) -> Path:
    engine = tmp_path / "engine.json"
    engine.write_text(json.dumps({"kind": "scripted"}))
    return engine


def generate(out: Path, *extra: str, env: dict[str, str] | None = None):
    return synth("generate", "self-instruct", "--out", out, "--num", "1", "--max-batches", "1", *extra, env=env)


# -- --out ------------------------------------------------------------------------------------------


def test_out_that_is_a_file(tmp_path, scripted):
    out = tmp_path / "notes.txt"
    out.write_text("mine")
    one_line(generate(out, "--engine-config", scripted), 2, out, "not a folder")
    assert out.read_text() == "mine"


def test_out_folder_holding_other_files(tmp_path, scripted):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    one_line(generate(out, "--engine-config", scripted), 2, out, "notes.txt", "no manifest.json")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_out_whose_parent_is_a_file(tmp_path, scripted):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = blocker / "sub" / "ds"
    one_line(generate(out, "--engine-config", scripted), 2, out, "is a file, not a folder")


def test_empty_dataset_skeleton_is_an_acceptable_out(tmp_path):
    from synth.cli.checks import check_out

    out = tmp_path / "ds"
    for sub in ("data", "rejects"):
        (out / sub).mkdir(parents=True)
    (out / ".lock").write_text("")
    check_out(out)  # no error: what a run that failed before its first commit leaves
    check_out(tmp_path / "new" / "deeper")


def test_corrupt_manifest_on_resume_is_named_and_left_alone(tmp_path, scripted):
    out = tmp_path / "ds"
    (out / "data").mkdir(parents=True)
    (out / "manifest.json").write_text('{"shards": [')
    one_line(generate(out, "--engine-config", scripted), 2, out / "manifest.json")
    assert (out / "manifest.json").read_text() == '{"shards": ['


# -- config files -----------------------------------------------------------------------------------


@pytest.mark.parametrize("option", ["--engine-config", "--curation"])
def test_config_path_that_is_a_folder_or_missing(tmp_path, option):
    folder = tmp_path / "configs"
    folder.mkdir()
    out = tmp_path / "out"
    one_line(generate(out, option, folder), 2, folder, "is a folder")
    one_line(generate(out, option, tmp_path / "nope.toml"), 2, tmp_path / "nope.toml", "no such file")
    assert not out.exists()


@pytest.mark.parametrize(
    ("sampling", "key"),
    [
        ("temperature = -0.5", "sampling.temperature"),
        ("top_p = 0", "sampling.top_p"),
        ("top_p = 1.5", "sampling.top_p"),
        ("max_tokens = 0", "sampling.max_tokens"),
        ("presence_penalty = 3", "sampling.presence_penalty"),
        ("temprature = 0.1", "sampling.temprature"),
    ],
)
def test_sampling_value_out_of_range_names_file_and_key(tmp_path, sampling, key):
    engine = tmp_path / "engine.toml"
    engine.write_text(f'kind = "scripted"\n[sampling]\n{sampling}\n')
    out = tmp_path / "out"
    one_line(generate(out, "--engine-config", engine), 2, "engine.toml", key)
    assert not out.exists()


def test_responder_that_does_not_import(tmp_path):
    engine = tmp_path / "engine.json"
    engine.write_text(json.dumps({"kind": "scripted", "responder": "no_such_module_here:make"}))
    out = tmp_path / "out"
    one_line(generate(out, "--engine-config", engine), 2, "engine.json", "responder", "no_such_module_here")
    engine.write_text(json.dumps({"kind": "scripted", "responder": "json:no_such_attribute"}))
    one_line(generate(out, "--engine-config", engine), 2, "responder", "no_such_attribute")
    engine.write_text(json.dumps({"kind": "scripted", "responder": "not a reference"}))
    one_line(generate(out, "--engine-config", engine), 2, "responder", "module:attribute")
    assert not out.exists()


def test_local_model_folder_that_does_not_exist(tmp_path):
    engine = tmp_path / "gpu.toml"
    engine.write_text(f'kind = "vllm"\nmodel = "{tmp_path / "models" / "missing"}"\n')
    out = tmp_path / "out"
    one_line(generate(out, "--engine-config", engine), 2, "gpu.toml", "model", "no such folder")
    assert not out.exists()


# -- services that do not answer --------------------------------------------------------------------


def test_openai_server_that_does_not_answer(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/v1"
    engine = tmp_path / "server.toml"
    engine.write_text(f'kind = "openai"\nmodel = "m"\nbase_url = "{url}"\n')
    out = tmp_path / "out"
    one_line(generate(out, "--engine-config", engine), 1, "server.toml", "base_url", url)
    assert not out.exists()


def test_redis_that_does_not_answer(tmp_path, scripted):
    url = f"redis://127.0.0.1:{free_port()}/0"
    curation = tmp_path / "curation.yaml"
    curation.write_text(yaml.safe_dump({"minhash": {"backend": "redis", "redis_url": url}}))
    out = tmp_path / "out"
    one_line(generate(out, "--engine-config", scripted, "--curation", curation), 1, "curation.yaml", url)
    assert not out.exists()


def test_prefect_server_that_does_not_answer(tmp_path, scripted):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = f"http://127.0.0.1:{free_port()}/api"
    out = tmp_path / "out"
    with temporary_settings({PREFECT_API_URL: url}):
        one_line(generate(out, "--engine-config", scripted), 1, url, "PREFECT_API_URL")
    assert not out.exists()


def test_a_failed_start_leaves_a_finished_run_finished(small_dataset, tmp_path, scripted):
    """A run that cannot start (here: Redis down) changes nothing in the dataset it would resume."""
    before = (small_dataset / "manifest.json").read_bytes()
    curation = tmp_path / "curation.json"
    curation.write_text(json.dumps({"minhash": {"backend": "redis", "redis_url": f"redis://127.0.0.1:{free_port()}"}}))
    one_line(generate(small_dataset, "--engine-config", scripted, "--curation", curation), 1, "Redis")
    assert (small_dataset / "manifest.json").read_bytes() == before


# -- recipes ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schedule", "key"),
    [
        ({"cron": "61 * * * *"}, "schedule.cron"),
        ({"cron": "every day"}, "schedule.cron"),
        ({"cron": "0 3 * * *", "timezone": "Mars/Olympus_Mons"}, "schedule.timezone"),
        ({"interval_seconds": 60, "timezone": "Not/AZone"}, "schedule.timezone"),
    ],
)
def test_recipe_schedule_is_checked_when_it_loads(tmp_path, schedule, key):
    recipe = tmp_path / "nightly.yaml"
    out = tmp_path / "ds"
    recipe.write_text(
        yaml.safe_dump(
            {
                "name": "nightly",
                "dataset": {"path": str(out)},
                "engine": {"kind": "scripted"},
                "steps": [{"generator": "self_instruct"}],
                "schedule": schedule,
            }
        )
    )
    one_line(synth("run", recipe), 2, "nightly.yaml", key)
    assert not out.exists()


def test_recipe_engine_and_dataset_are_checked_before_the_run(tmp_path):
    recipe = tmp_path / "r.yaml"
    out = tmp_path / "ds"
    data = {
        "name": "r",
        "dataset": {"path": str(out)},
        "engine": {"kind": "scripted", "responder": "missing_module_xyz:make"},
        "steps": [{"generator": "self_instruct"}],
    }
    recipe.write_text(yaml.safe_dump(data))
    one_line(synth("run", recipe), 2, "r.yaml", "engine.responder", "missing_module_xyz")
    assert not out.exists()
    data["engine"] = {"kind": "scripted"}
    out.write_text("a file")
    recipe.write_text(yaml.safe_dump(data))
    one_line(synth("run", recipe), 2, out, "not a folder")


def test_recipe_step_inputs_are_read_before_the_run(tmp_path):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text('{"instruction": "Fine."}\n{"instruction": \n')
    recipe = tmp_path / "r.yaml"
    out = tmp_path / "ds"
    data = {
        "name": "r",
        "dataset": {"path": str(out)},
        "engine": {"kind": "scripted"},
        "steps": [{"generator": "self_instruct", "seeds": str(seeds)}],
    }
    recipe.write_text(yaml.safe_dump(data))
    one_line(synth("run", recipe), 2, "seeds.jsonl:2")
    assert not out.exists()


# -- curate and export ------------------------------------------------------------------------------


def test_curate_checks_its_inputs_before_writing(tmp_path):
    records = tmp_path / "records.jsonl"
    records.write_text(json.dumps({"instruction": "Say hi.", "output": "Hi."}) + "\n")
    out = tmp_path / "ds"
    one_line(synth("curate", records, "--out", out, "--benchmark", tmp_path / "gone.jsonl"), 2, "gone.jsonl")
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"minhash": {"backend": "redis", "redis_url": f"redis://127.0.0.1:{free_port()}"}}))
    one_line(synth("curate", records, "--out", out, "--curation", config), 1, "c.json", "minhash.redis_url")
    one_line(synth("curate", records, "--out", out, "--config", config), 1, "c.json", "minhash.redis_url")  # old name
    one_line(synth("curate", tmp_path / "missing.jsonl", "--out", out), 2, "missing.jsonl")
    assert not out.exists()


def test_export_out_that_is_a_folder_or_cannot_be_created(small_dataset, tmp_path):
    folder = tmp_path / "exports"
    folder.mkdir()
    one_line(synth("export", small_dataset, "--out", folder), 2, folder, "is a folder")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    one_line(synth("export", small_dataset, "--out", blocker / "x.jsonl"), 2, blocker, "not a folder")
    assert list(folder.iterdir()) == []


# -- faults at run time, as the flows raise them ----------------------------------------------------


def _flow_raising(error: BaseException):
    def flow(**kwargs):
        # What a run that fails before its first commit leaves: the dataset skeleton.
        from synth.shards import DatasetWriter

        with DatasetWriter(kwargs["dataset"].path):
            raise error

    return flow


def _prefect_wrapped(cause: BaseException) -> BaseException:
    from prefect.exceptions import CrashedRun

    try:
        try:
            raise cause
        except BaseException as e:
            raise CrashedRun("Flow run crashed") from e
    except CrashedRun as wrapped:
        return wrapped


@pytest.mark.parametrize(
    ("error", "code", "names"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), 1, ["disk full while writing", "re-run to resume"]),
        (
            _prefect_wrapped(OSError(errno.ENOSPC, "No space left on device", "/data/ds/manifest.json")),
            1,
            ["disk full while writing /data/ds/manifest.json"],
        ),
        (
            ExceptionGroup("task group", [RuntimeError("batch failed"), OSError(errno.EDQUOT, "Disk quota exceeded")]),
            1,
            ["disk full"],
        ),
        (
            _prefect_wrapped(__import__("synth.engines").engines.EngineError("model server gone")),
            1,
            ["model server gone"],
        ),
        (OSError(errno.EACCES, "Permission denied", "/srv/ds/data"), 2, ["/srv/ds/data: Permission denied"]),
        (OSError(errno.EIO, "Input/output error", "/srv/ds/data"), 1, ["Input/output error"]),
        (KeyError("surprise [/b]"), 1, ["unexpected KeyError", "[/b]", "-v"]),
    ],
)
def test_faults_at_run_time(tmp_path, scripted, monkeypatch, error, code, names):
    import synth.flows.self_instruct as module

    monkeypatch.setattr(module, "self_instruct_flow", _flow_raising(error))
    out = tmp_path / "new" / "ds"
    text = one_line(generate(out, "--engine-config", scripted), code, *names)
    if "disk full" in text and "/data/ds" not in text:
        assert str(out) in text  # the dataset being written, when the OS error names no file
    assert not (tmp_path / "new").exists()  # the folders this command created, removed again


def test_a_failure_after_a_commit_keeps_the_dataset(tmp_path, scripted, monkeypatch):
    import synth.flows.self_instruct as module
    from synth.schemas import RunInfo
    from synth.shards import DatasetWriter

    def flow(**kwargs):
        with DatasetWriter(kwargs["dataset"].path) as writer:
            writer.start_run(RunInfo(run_id="r", generator="self_instruct", config={}, engine={}, model="m"))
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(module, "self_instruct_flow", flow)
    out = tmp_path / "ds"
    one_line(generate(out, "--engine-config", scripted), 1, "disk full", out)
    assert (out / "manifest.json").is_file()


def test_describe_reports_the_real_cause_under_prefect_wrappers():
    from synth.schemas import ConfigFileError

    message, code = describe(_prefect_wrapped(ConfigFileError("r.yaml: steps.0.seeds: x does not exist")))
    assert (message, code) == ("r.yaml: steps.0.seeds: x does not exist", 2)


# -- tracebacks on request --------------------------------------------------------------------------


def test_verbose_and_synth_debug_show_the_traceback(tmp_path):
    folder = tmp_path / "configs"
    folder.mkdir()
    out = tmp_path / "out"
    for args, env in (
        (["-v", "generate", "self-instruct"], None),
        (["--verbose", "generate", "self-instruct"], None),
        (["generate", "self-instruct"], {"SYNTH_DEBUG": "1"}),
    ):
        result = synth(*args, "--out", out, "--engine-config", folder, env=env)
        assert result.exit_code == 2
        assert "Traceback" in result.output and "ConfigFileError" in result.output
        assert result.output.strip().splitlines()[-1].startswith("error: ")
    assert not out.exists()


def test_the_installed_command_prints_one_line(tmp_path):
    """Through `main()`, as a user runs it."""
    out = tmp_path / "notes.txt"
    out.write_text("mine")
    env = {**os.environ, "COLUMNS": "60"}
    result = subprocess.run(
        [sys.executable, "-m", "synth.cli", "generate", "self-instruct", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(out) in lines[0], result.stderr


# -- data printed literally -------------------------------------------------------------------------


def _odd_dataset(path: Path) -> None:
    from synth.schemas import Record, Reject, RunInfo
    from synth.shards import DatasetWriter

    record = Record(generator="self_instruct", instruction="<s>[INST] Say hi [/INST]", output="[bold]hi[/]")
    reject = Reject.model_validate(
        {**record.model_dump(), "id": "r1", "instruction": "x [/i]", "stage": "heuristic", "reason": "[/red] odd"}
    )
    with DatasetWriter(path) as writer:
        writer.start_run(RunInfo(run_id="r", generator="self_instruct", config={}, engine={}, model="m[/x]"))
        writer.commit_batch("r", 0, [record], [reject])
        writer.finish_run("r")


def test_inspect_prints_markup_like_record_text_literally(tmp_path):
    path = tmp_path / "odd"
    _odd_dataset(path)
    result = synth("inspect", path, "--rejects", env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    for text in ("[/INST]", "[bold]hi[/]", "[/red] odd", "m[/x]"):
        assert text in result.output


def test_inspect_a_dataset_whose_path_looks_like_markup(tmp_path):
    path = tmp_path / "odd[/b]name"
    _odd_dataset(path)
    result = synth("inspect", path, env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "odd[/b]name" in result.output


def test_print_summary_prints_paths_and_reasons_literally(tmp_path, capsys):
    print_summary(
        {
            "dataset": str(tmp_path / "a[/b]"),
            "rejects_by_reason": {"heuristics[/x]": {"[/INST] leaked": 2}},
            "kept": 1,
            "rejected": 2,
            "batches": 1,
            "run_id": "[/r]",
            "reached_target": False,
        }
    )
    printed = capsys.readouterr().out
    for text in ("a[/b]", "heuristics[/x]", "[/INST] leaked", "[/r]"):
        assert text in printed
