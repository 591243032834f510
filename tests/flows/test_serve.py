"""A recipe served against a real Prefect server runs on its schedule and writes its dataset."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from synth.cli import app
from synth.shards import read_manifest

ROOT = Path(__file__).parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def completed_runs(url: str) -> list[dict]:
    """The server's completed flow runs; none yet where it is too busy to answer in time (a loaded
    machine), so `wait_for` asks again until its own deadline."""
    body = {"flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}}}
    try:
        return httpx.post(f"{url}/flow_runs/filter", json=body, timeout=10).json()
    except httpx.TimeoutException:
        return []


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


@pytest.mark.e2e
def test_served_recipe_runs_on_its_interval_and_writes_shards(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    port = url.rsplit(":", 1)[1].split("/")[0]
    prefect = Path(sys.executable).with_name("prefect")
    server = subprocess.Popen(
        [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", port],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    served = None
    try:
        wait_for(lambda: healthy(url), 120, "the Prefect server")
        recipe = tmp_path / "every5s.yaml"
        recipe.write_text(
            yaml.safe_dump(
                {
                    "name": "every5s",
                    "dataset": {"path": str(tmp_path / "served")},
                    "engine": {"kind": "scripted"},
                    "schedule": {"interval_seconds": 5},
                    "steps": [
                        {"generator": "self_instruct", "num_records": 1, "max_batches": 1, "prompts_per_batch": 1}
                    ],
                }
            )
        )
        served = subprocess.Popen(
            [sys.executable, "-m", "synth.cli", "serve", str(recipe)],
            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        runs = wait_for(
            lambda: [r for r in completed_runs(url) if r["deployment_id"]], 180, "a completed scheduled run"
        )
        assert runs[0]["state"]["type"] == "COMPLETED"
        manifest = read_manifest(tmp_path / "served")
        assert manifest.shards and next(iter(manifest.runs.values())).generator == "self_instruct"
    finally:
        if served is not None:
            stop(served)
        stop(server)


def test_serve_names_an_unreachable_server(tmp_path):
    recipe = tmp_path / "r.yaml"
    data = {
        "name": "r",
        "dataset": {"path": str(tmp_path / "d")},
        "schedule": {"cron": "0 2 * * *"},
        "steps": [{"generator": "self_instruct"}],
    }
    recipe.write_text(yaml.safe_dump(data))
    url = f"http://127.0.0.1:{free_port()}/api"
    env = {**os.environ, "PREFECT_API_URL": url, "PREFECT_HOME": str(tmp_path / "home"), "COLUMNS": "200"}
    # A real process, as a user runs it: settings come from its environment, and a wrong outcome
    # (serving forever) ends at the timeout instead of hanging the suite.
    out = subprocess.run(
        [sys.executable, "-m", "synth.cli", "serve", str(recipe)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    # A server that is down is a fault at run time (exit 1), not bad input (exit 2).
    assert out.returncode == 1 and url in out.stderr and "not reachable" in out.stderr


def test_serve_refuses_a_recipe_without_a_schedule(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {"name": "r", "dataset": {"path": str(tmp_path / "d")}, "steps": [{"generator": "self_instruct"}]}
        )
    )
    result = CliRunner().invoke(app, ["serve", str(recipe)])
    assert result.exit_code == 2 and "no 'schedule'" in result.output
