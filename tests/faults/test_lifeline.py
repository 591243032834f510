"""A run killed with SIGKILL leaves no process behind: its temporary Prefect server ends with it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

SYNTH = str(Path(sys.executable).with_name("synth"))


@pytest.mark.e2e
def test_sigkill_of_a_run_ends_its_temporary_prefect_server(tmp_path):
    engine = tmp_path / "engine.json"
    engine.write_text(json.dumps({"kind": "scripted"}))
    env = {**os.environ, "PREFECT_API_URL": "", "PREFECT_HOME": str(tmp_path / "prefect")}
    out = tmp_path / "ds"
    run = subprocess.Popen(
        [SYNTH, "generate", "self-instruct", "--engine-config", str(engine), "--num", "100000",
         "--max-batches", "100000", "--out", str(out)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    me = psutil.Process(run.pid)
    deadline = time.monotonic() + 180
    descendants: list[psutil.Process] = []
    while time.monotonic() < deadline:  # until the first batch is in: the server is up by then
        if (out / "manifest.json").exists() and json.loads((out / "manifest.json").read_text())["runs"]:
            descendants = me.children(recursive=True)
            if any("uvicorn" in " ".join(p.cmdline()) or "prefect" in " ".join(p.cmdline()) for p in descendants):
                break
        assert run.poll() is None, "the run ended before it could be killed"
        time.sleep(0.2)
    servers = [p for p in descendants if "python" in p.name() and "-c" not in p.cmdline()[1:2]]
    assert servers, [p.cmdline() for p in descendants]
    time.sleep(1.5)  # the watcher notes descendants about once a second
    os.kill(run.pid, signal.SIGKILL)
    run.wait(timeout=30)
    _, alive = psutil.wait_procs(descendants, timeout=20)
    assert alive == [], [p.cmdline() for p in alive]
