"""A command that has finished exits: the engines it built are closed and the processes they keep
are stopped, on success, on an error and on Ctrl-C alike, and a close that hangs is cut short.

vLLM keeps its engine core in a child process that waits for work; Python's exit joins such a
child without a limit, so a command that left its engine open printed its last line and never
returned. The commands here run through the real command line, in a process of their own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from synth.engines import close_bounded, close_engines, get_engine, held_engines
from synth.schemas import ScriptedEngineConfig
from tests.conftest import build_small_dataset

REPO = Path(__file__).resolve().parents[2]
EXIT_WITHIN_S = 30  # after its last line; a command that hangs never exits at all
GIVE_UP_S = 180  # for a command that loads no model; one still running then fails the test


class Command:
    """A `synth` command in a process (and session) of its own, its output lines timed as they come."""

    def __init__(self, *args: str | Path, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "synth.cli", *map(str, args)],
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self.last_line_at = 0.0
        streams = (self.process.stdout, self.process.stderr)
        self._readers = [threading.Thread(target=self._read, args=(s,), daemon=True) for s in streams]
        for reader in self._readers:
            reader.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))
            self.last_line_at = time.monotonic()

    def wait(self, last: str | None = None, since: float | None = None, give_up: float = GIVE_UP_S) -> int:
        """The exit code. Once the command has printed a line holding `last`, it must exit within
        EXIT_WITHIN_S of its last line (or of `since`): one still running then fails the test, and
        so does one still running after `give_up` seconds; what is left of it is killed."""
        started = time.monotonic()
        while self.process.poll() is None:
            ended = since if since is not None else self.last_line_at if self._said(last) else None
            if ended is not None and time.monotonic() - ended > EXIT_WITHIN_S:
                self._kill(f"still running {EXIT_WITHIN_S} s after it was done")
            if time.monotonic() - started > give_up:
                self._kill(f"still running after {give_up} s")
            time.sleep(0.2)
        for reader in self._readers:
            reader.join(timeout=10)
        return self.process.returncode

    def _said(self, last: str | None) -> bool:
        return last is not None and any(last in line for line in self.lines)

    def _kill(self, why: str) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        pytest.fail(f"{why}:\n" + "\n".join(self.lines[-20:]))

    def output(self) -> str:
        return "\n".join(self.lines)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# -- closing with a limit ---------------------------------------------------------------------------


class StuckEngine:
    """An engine whose close never returns (a model runtime that does not answer its shutdown)."""

    model_name = "stuck"

    def __init__(self, close_error: Exception | None = None) -> None:
        self.close_error = close_error
        self.release = threading.Event()
        self.killed = False

    def close(self) -> None:
        if self.close_error is not None:
            raise self.close_error
        self.release.wait(60)

    def kill(self) -> None:
        self.killed = True
        self.release.set()


def test_a_close_that_hangs_is_cut_short_and_the_engine_killed():
    engine = StuckEngine()
    close_bounded(engine, timeout=0.5)
    assert engine.killed


def test_a_close_that_fails_kills_the_engine_and_raises_nothing():
    engine = StuckEngine(close_error=RuntimeError("engine core already dead"))
    close_bounded(engine, timeout=5)
    assert engine.killed


def test_an_engine_that_closes_in_time_is_not_killed():
    engine = StuckEngine()
    engine.release.set()
    close_bounded(engine, timeout=5)
    assert not engine.killed


def test_close_engines_closes_all_but_the_engines_it_is_told_to_keep():
    close_engines()
    held = get_engine(ScriptedEngineConfig(model="held"))
    keep = held_engines()
    opened = get_engine(ScriptedEngineConfig(model="opened"))
    close_engines(keep=keep)
    assert get_engine(ScriptedEngineConfig(model="held")) is held
    assert get_engine(ScriptedEngineConfig(model="opened")) is not opened
    close_engines()


# -- through the command line -----------------------------------------------------------------------


@pytest.fixture
def judged(tmp_path):
    """A dataset, and the options and environment of `synth curate --judge` with a scripted judge
    whose engine keeps a child process waiting for work, as vLLM's does."""
    dataset = tmp_path / "ds"
    build_small_dataset(dataset)
    engine = tmp_path / "judge.json"
    engine.write_text(json.dumps({"kind": "scripted", "responder": "tests.cli.child_engine:judge_keeping_a_child"}))
    child = tmp_path / "child.pid"
    yield dataset, ["--judge", "--engine-config", engine], child
    if child.exists() and not gone(pid := int(child.read_text())):
        os.kill(pid, signal.SIGKILL)  # left behind by a command that never exited


@pytest.mark.parametrize(("mode", "code", "says"), [("ok", 0, "records kept"), ("fail", 1, "the model went away")])
def test_a_command_whose_engine_keeps_a_child_process_exits_when_done(judged, mode, code, says):
    dataset, options, child = judged
    command = Command("curate", dataset, *options, env={"CHILD_PID_FILE": str(child), "JUDGE_MODE": mode})
    assert command.wait(last=says) == code, command.output()
    assert gone(int(child.read_text()))


def test_ctrl_c_ends_a_command_and_the_processes_of_its_engine(judged):
    dataset, options, child = judged
    command = Command("curate", dataset, *options, env={"CHILD_PID_FILE": str(child), "JUDGE_MODE": "wait"})
    serving = child.with_suffix(".serving")
    deadline = time.monotonic() + GIVE_UP_S
    while not serving.exists() and command.process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert serving.exists(), command.output()
    interrupted = time.monotonic()
    command.process.send_signal(signal.SIGINT)  # the command alone: its engine's child is not told
    assert command.wait(since=interrupted) != 0
    assert gone(int(child.read_text()))


@pytest.mark.engine
def test_select_by_ifd_on_the_embedded_model_exits_after_its_last_line(tmp_path):
    """The reported case: IFD loads the in-process vLLM engine from the process's table."""
    dataset, out = tmp_path / "ds", tmp_path / "picked"
    build_small_dataset(dataset, batches=1)
    command = Command("select", dataset, "--method", "ifd", "--budget", "3", "--out", out)
    # Loading the model takes minutes on a busy 2-core machine; exiting, seconds.
    assert command.wait(last=f"written to {out}", give_up=6 * GIVE_UP_S) == 0, command.output()


@pytest.mark.engine
def test_ctrl_c_while_vllm_answers_a_benchmark_ends_the_command_and_every_process_it_started(tmp_path):
    """`synth evaluate`'s benchmark answers come from vLLM loaded in the command's own process;
    Ctrl-C in the middle of them ends the command within seconds, and nothing it started outlives
    it (no engine core, no compile worker: the command's process group is empty). `compare` opens
    its answer engines through the same `answers_for`; one load of the model in a process of its
    own is what the suite affords."""
    dataset = tmp_path / "ds"
    build_small_dataset(dataset, batches=1)
    run = Command(
        "evaluate", dataset, "--benchmark", "ifbench", "--benchmark-limit", "8", "--max-steps", "1", "--threads", "1"
    )
    deadline = time.monotonic() + 6 * GIVE_UP_S  # the model loads in minutes on a busy 2-core machine
    while not run._said(" answers 8 prompts") and run.process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert run._said(" answers 8 prompts"), run.output()  # "ifbench: <base> answers 8 prompts": vLLM serves
    interrupted = time.monotonic()
    run.process.send_signal(signal.SIGINT)
    assert run.wait(since=interrupted) != 0, run.output()
    left = [p for p in psutil.process_iter(["pid", "cmdline"]) if _group(p.pid) == run.process.pid and not gone(p.pid)]
    if left:
        os.killpg(run.process.pid, signal.SIGKILL)
    assert not left, f"processes of `synth evaluate` outlived it: {[p.info['cmdline'] for p in left]}"


def _group(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None
