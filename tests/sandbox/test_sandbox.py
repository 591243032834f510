"""The sandbox against hostile programs: each ends with its kind, in bounded time, the host untouched
and nothing it started alive afterwards."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from synth.sandbox import Sandbox, SandboxConfig, SandboxUnavailable, slot_uid
from synth.schemas.code import MAX_SLOTS

LIMITS = SandboxConfig(timeout_s=6, cpu_s=3, workers=2)


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    box = Sandbox(LIMITS)
    box.check()  # fails (never skips) where bubblewrap is missing: `make test` installs it
    return box


def _survivors() -> list[int]:
    """Processes of this process's sandbox users still alive (the program runs as one of them
    under root; another test process's sandboxes run as users of their own)."""
    ours = range(slot_uid(0), slot_uid(MAX_SLOTS))
    alive = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid in ours:
                    alive.append(int(entry.name))
            except OSError:
                continue
    return alive


@pytest.fixture(autouse=True)
def nothing_left_behind():
    yield
    if os.geteuid() == 0:
        deadline = time.monotonic() + 2
        while _survivors() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _survivors() == []


def test_a_program_that_passes_prints_and_exits_zero(sandbox):
    run = sandbox.run("def add(a, b):\n    return a + b\n\nassert add(2, 3) == 5\nprint('fine')")
    assert run.kind == "passed" and run.passed and run.stdout == "fine\n"


@pytest.mark.parametrize(
    ("program", "kind", "error"),
    [
        ("assert sorted([3, 1]) == [3, 1], 'not sorted'", "assertion", "AssertionError: not sorted"),
        ("{}['missing']", "exception", "KeyError: 'missing'"),
        ("import sys\nsys.exit(3)", "exit", "SystemExit: 3"),
        ("data = bytearray(10 * 2**30)", "memory", "MemoryError"),
    ],
)
def test_failures_are_told_apart_with_the_programs_own_error(sandbox, program, kind, error):
    run = sandbox.run(program)
    assert (run.kind, run.error()) == (kind, error)


def test_an_endless_loop_stops_at_its_cpu_limit(sandbox):
    run = sandbox.run("while True:\n    pass")
    assert run.kind == "timeout" and run.seconds < LIMITS.timeout_s


def test_a_sleeping_program_stops_at_its_wall_time(sandbox):
    run = sandbox.run("import time\ntime.sleep(600)")
    assert run.kind == "timeout" and LIMITS.timeout_s <= run.seconds < LIMITS.timeout_s + 3


def test_a_fork_bomb_runs_into_the_process_limit(sandbox):
    run = sandbox.run("import os\nwhile True:\n    os.fork()")
    assert run.kind == "refused" and "Resource temporarily unavailable" in run.error()


def test_a_detached_sleeping_child_dies_with_its_program(sandbox, tmp_path):
    program = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(300)\nprint('parent leaves')"
    run = sandbox.run(program)
    assert run.passed and run.stdout == "parent leaves\n"
    # nothing_left_behind checks that the child is gone too


def test_a_hundred_megabytes_on_stdout_is_cut_at_the_output_limit(sandbox):
    started = time.monotonic()
    run = sandbox.run("import sys\nfor _ in range(1600):\n    sys.stdout.write('x' * 65536)")
    assert run.kind == "output" and time.monotonic() - started < LIMITS.timeout_s
    assert set(run.stdout) == {"x"} and len(run.stdout) <= 2000  # only the tail comes back


def test_the_program_cannot_reach_services_on_the_hosts_loopback(sandbox):
    with socket.socket() as listener:  # a service on the host's 127.0.0.1, as Redis and PostgreSQL are
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        run = sandbox.run(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=3)")
    assert run.kind == "refused" and "Connection refused" in run.error()
    outside = sandbox.run("import socket\nsocket.getaddrinfo('pypi.org', 443)")
    assert outside.kind != "passed"


def test_the_program_writes_nowhere_but_its_own_tmp(sandbox, tmp_path):
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    (dataset / "manifest.json").write_text("{}")
    home = Path.home()
    targets = [dataset / "manifest.json", dataset / "new.parquet", home / "synth-sandbox-was-here", Path("/etc/passwd")]
    for target in targets:
        run = sandbox.run(f"open({str(target)!r}, 'w').write('overwritten')")
        assert run.kind in {"refused", "exception"} and ("Errno" in run.error()), run.error()
    assert (dataset / "manifest.json").read_text() == "{}"
    assert sorted(p.name for p in dataset.iterdir()) == ["manifest.json"]
    assert not (home / "synth-sandbox-was-here").exists()
    scratch = sandbox.run("open('notes.txt', 'w').write('mine')\nprint(open('/tmp/notes.txt').read())")
    assert scratch.passed and scratch.stdout == "mine\n"


def test_the_program_reads_no_private_files_and_no_environment(sandbox, tmp_path, monkeypatch):
    secret = tmp_path / "secret.txt"
    secret.write_text("the host's secret")
    monkeypatch.setenv("SYNTH_TEST_TOKEN", "hunter2")
    run = sandbox.run(
        f"import os\nprint(sorted(os.environ))\nprint(os.path.exists({str(secret)!r}), os.path.exists('/etc/shadow'))"
    )
    assert run.passed
    names, exists = run.stdout.splitlines()
    assert "SYNTH_TEST_TOKEN" not in names and "hunter2" not in run.stdout
    assert exists == "False False"


def test_programs_run_in_parallel_and_come_back_in_order(sandbox):
    programs = [f"import time\ntime.sleep(1)\nprint({n})" for n in range(4)]
    started = time.monotonic()
    runs = list(sandbox.run_many(programs))
    assert [r.stdout for r in runs] == [f"{n}\n" for n in range(4)]
    assert time.monotonic() - started < 4  # two slots: about two seconds, not four


def test_a_machine_without_bubblewrap_gets_one_line_saying_what_to_install(monkeypatch):
    monkeypatch.setattr("synth.sandbox.shutil.which", lambda name: None)
    with pytest.raises(SandboxUnavailable, match="apt install bubblewrap") as error:
        Sandbox().check()
    assert "\n" not in str(error.value)


def test_without_isolation_the_limits_still_hold():
    box = Sandbox(SandboxConfig(timeout_s=5, cpu_s=2), isolation="none-unsafe")
    assert box.run("print(1)").stdout == "1\n"
    assert box.run("while True:\n    pass").kind == "timeout"
    assert box.run("data = bytearray(10 * 2**30)").kind == "memory"


def test_the_error_is_the_exception_a_traceback_ends_with_though_processes_interleave_theirs():
    from synth.sandbox import Execution

    interleaved = (
        'Traceback (most recent call last):\n  File "solution.py", line 3, in <module>\n'
        "BlockingIOError: [Errno 11] Resource temporarily unavailable\n"
        "Traceback (most recent call last):\nTraceback (most recent call last):\n"
    )
    run = Execution(kind="refused", returncode=1, seconds=0.1, stdout="", stderr=interleaved)
    assert run.error() == "BlockingIOError: [Errno 11] Resource temporarily unavailable"
    plain = Execution(kind="error", returncode=1, seconds=0.1, stdout="", stderr="killed by the limit\n")
    assert plain.error() == "killed by the limit"
    assert Execution(kind="timeout", returncode=-9, seconds=10, stdout="", stderr="").error() == "timeout"


def test_two_processes_run_their_programs_as_users_of_their_own():
    """Two runs on one machine (two commands, Ray workers on one node) never share a user: the
    process limit counts a user's processes together, and one run's leftovers must not look like
    the other's. Each process's first slot has a user of its own."""
    program = "import os; print(os.getuid())"
    here = Sandbox(SandboxConfig(workers=1)).run(program)
    script = f"from synth.sandbox import Sandbox, SandboxConfig\nprint(Sandbox(SandboxConfig(workers=1)).run({program!r}).stdout)"
    other = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert here.passed and int(here.stdout) == slot_uid(0)
    assert int(other.stdout) not in (slot_uid(0), slot_uid(1))
