"""Killing a run with SIGKILL and running the same command again finishes the job exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from synth.shards import read_manifest, scan, verify

pytestmark = pytest.mark.usefixtures("prefect_harness")
WORKER = Path(__file__).with_name("resume_worker.py")
ROOT = Path(__file__).parents[2]


def worker(out: Path, batches: int) -> subprocess.Popen:
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value() or "", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, str(WORKER), str(out), str(batches)], env=env, start_new_session=True)


def contents(path: Path):
    kept = scan(path).select("id", "instruction", "input", "output", "batch").sort("id").collect().rows()
    rejects = scan(path, "rejects").select("id", "stage", "reason", "batch").sort("id").collect().rows()
    return kept, rejects


@pytest.mark.e2e
def test_sigkill_mid_run_then_rerun_equals_an_uninterrupted_run(tmp_path):
    batches = 6
    assert worker(tmp_path / "whole", batches).wait(timeout=300) == 0

    victim = worker(tmp_path / "killed", batches)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        manifest = tmp_path / "killed" / "manifest.json"
        if manifest.exists() and any(r.batches_done >= 2 for r in read_manifest(tmp_path / "killed").runs.values()):
            break
        time.sleep(0.05)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(timeout=30)
    done = next(iter(read_manifest(tmp_path / "killed").runs.values())).batches_done
    assert 2 <= done < batches, "the kill should land mid-run"

    assert worker(tmp_path / "killed", batches).wait(timeout=300) == 0
    assert contents(tmp_path / "killed") == contents(tmp_path / "whole")
    assert verify(tmp_path / "killed") == []
    kept = scan(tmp_path / "killed").collect()
    assert kept["id"].n_unique() == kept.height
    assert next(iter(read_manifest(tmp_path / "killed").runs.values())).batches_done == batches
