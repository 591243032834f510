"""Killing a run with SIGKILL and running the same command again finishes the job exactly once."""

from __future__ import annotations

import json
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


def worker(out: Path, batches: int, source: Path | str | None = None) -> subprocess.Popen:
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value() or "", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, str(WORKER), str(out), str(batches), *([str(source)] if source else [])]
    return subprocess.Popen(command, env=env, start_new_session=True)


def contents(path: Path):
    kept = scan(path).select("id", "instruction", "input", "output", "batch").sort("id").collect().rows()
    rejects = scan(path, "rejects").select("id", "stage", "reason", "batch").sort("id").collect().rows()
    return kept, rejects


@pytest.mark.e2e
@pytest.mark.parametrize("generator", ["self_instruct", "reflection", "unnatural", "codeclm"])
def test_sigkill_mid_run_then_rerun_equals_an_uninterrupted_run(tmp_path, generator):
    batches = 6
    source: Path | str | None = generator if generator in ("unnatural", "codeclm") else None
    if generator == "reflection":  # two source pairs a batch
        source = tmp_path / "pairs.jsonl"
        rows = [{"id": f"src-{i}", "instruction": f"old-{i}", "output": f"ans-o-{i}"} for i in range(2 * batches)]
        source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert worker(tmp_path / "whole", batches, source).wait(timeout=300) == 0

    victim = worker(tmp_path / "killed", batches, source)
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

    assert worker(tmp_path / "killed", batches, source).wait(timeout=300) == 0
    assert contents(tmp_path / "killed") == contents(tmp_path / "whole")
    assert verify(tmp_path / "killed") == []
    kept = scan(tmp_path / "killed").collect()
    assert kept.height > 0 and kept["id"].n_unique() == kept.height
    assert next(iter(read_manifest(tmp_path / "killed").runs.values())).batches_done == batches
