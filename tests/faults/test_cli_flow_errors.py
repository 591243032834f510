"""Faults inside a real Prefect flow run reach the user as one line: the cause Prefect wrapped is
the one reported, a full disk says what to do, and what was committed stays."""

from __future__ import annotations

import errno
import json

import pytest
from typer.testing import CliRunner

from synth.cli import app
from synth.shards import DatasetWriter, read_manifest

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_disk_full_in_a_flow_run_is_one_line_and_keeps_what_was_committed(tmp_path, monkeypatch):
    engine = tmp_path / "engine.json"
    engine.write_text(json.dumps({"kind": "scripted"}))

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(DatasetWriter, "commit_batch", full)
    out = tmp_path / "ds"
    args = ["generate", "self-instruct", "--engine-config", str(engine), "--out", str(out), "--num", "1"]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    lines = [line for line in result.output.strip().splitlines() if line.startswith("error: ")]
    assert result.exit_code == 1, result.output
    assert lines == [
        f"error: disk full while writing {out}: what was committed is kept; free space and re-run to resume"
    ], result.output
    assert "Traceback" not in result.output
    # The run was registered before the disk filled: the dataset stays, to be resumed.
    assert list(read_manifest(out).runs)
