"""The `synth` command line: bad input gives one line naming the file, and a non-zero exit."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from synth.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"instruction": "fine"}\n{"instruction": ', "bad.jsonl:2: invalid JSON"),
        (b'{"id": "x"}\n', "bad.jsonl:1: missing field 'instruction'"),
        (b"", "bad.jsonl: no seed tasks"),
        (b'{"instruction": "caf\xe9"}\n', "bad.jsonl:1: not UTF-8"),
    ],
)
def test_malformed_seed_file_is_one_line_naming_file_and_line(tmp_path, content, expected):
    seeds = tmp_path / "bad.jsonl"
    seeds.write_bytes(content)
    result = invoke("generate", "self-instruct", "--seeds", str(seeds), "--out", str(tmp_path / "out"))
    assert result.exit_code == 2
    message = result.output.strip()
    assert expected in message
    assert "\n" not in message and "Traceback" not in message
    assert not (tmp_path / "out").exists()


def test_invalid_engine_config_names_the_file_and_key(tmp_path):
    config = tmp_path / "engine.toml"
    config.write_text('kind = "vllm"\nmodle = "typo"\n')
    result = invoke("generate", "self-instruct", "--engine-config", str(config), "--out", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert "engine.toml" in result.output and "modle" in result.output


def test_out_directory_holding_other_files_is_refused(tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    engine = tmp_path / "engine.json"
    engine.write_text(json.dumps({"kind": "scripted"}))
    result = invoke(
        "generate",
        "self-instruct",
        "--engine-config",
        str(engine),
        "--out",
        str(out),
        "--num",
        "1",
        "--max-batches",
        "1",
    )
    assert result.exit_code == 2
    assert "not empty" in result.output
    assert (out / "notes.txt").read_text() == "mine"


def test_help_lists_the_generator_and_its_options():
    env = {**os.environ, "COLUMNS": "200"}
    out = subprocess.run(
        [sys.executable, "-m", "synth.cli", "generate", "self-instruct", "--help"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert out.returncode == 0
    for option in ("--seeds", "--num", "--out", "--engine-config"):
        assert option in out.stdout


def test_an_out_folder_holding_only_the_library_log_is_accepted(tmp_path):
    from synth.cli.checks import check_out
    from synth.cli.errors import CLIError

    out = tmp_path / "ds"
    out.mkdir()
    (out / "library.log").write_text("runtime start-up notices\n")
    check_out(out)  # accepted: returns
    (out / "notes.txt").write_text("mine")
    with pytest.raises(CLIError, match="not empty"):
        check_out(out)
