"""Running untrusted Python: one program per isolated process, with limits, and nothing left behind.

`Sandbox.run(program)` runs a program (source text) under bubblewrap: its own process, PID,
network, IPC and hostname namespaces (no network at all, not even the host's loopback), a
read-only view of the interpreter and the system's libraries and nothing else of the host's files
(no home, no datasets, no other users' files), a private size-capped `/tmp` as the only writable
place and working folder, an empty environment, and limits on address space, CPU time, wall time,
processes, file size (which caps what it prints) and open files. Started as root, the program runs
as an unprivileged user of its own (one per parallel slot); started as a user, in a user namespace.
When the program ends or its wall time runs out, everything it started dies with it: the PID
namespace goes when its first process does.

`Execution.kind` says how it ended: `passed` (exit 0), `assertion`, `exception`, `exit` (a non-zero
`sys.exit`), `timeout` (CPU or wall time), `memory`, `output` (over the output limit) or `refused`
(an operation the sandbox forbids: the network, writing outside `/tmp`, another process over the
limit, a permission). `run_many` runs programs in parallel on a bounded number of slots.

Where bubblewrap is missing or cannot make its namespaces, `Sandbox.check()` raises
`SandboxUnavailable` with one line saying what to install; `isolation="none-unsafe"` runs programs
without any isolation (limits only) and says so loudly, for machines where the user accepts that.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from synth.schemas.code import MAX_SLOTS, Isolation, SandboxConfig

_log = logging.getLogger(__name__)

Kind = Literal["passed", "assertion", "exception", "exit", "timeout", "memory", "output", "refused"]
KINDS: tuple[Kind, ...] = ("passed", "assertion", "exception", "exit", "timeout", "memory", "output", "refused")
_BY_CODE: dict[int, Kind] = {0: "passed", 101: "exception", 102: "assertion", 103: "memory", 104: "refused"}
_BY_CODE |= {105: "output", 106: "exit"}
_BY_SIGNAL: dict[int, Kind] = {signal.SIGXCPU: "timeout", signal.SIGXFSZ: "output", signal.SIGKILL: "memory"}
_LAUNCHER = (Path(__file__).parent / "launcher.py").read_text(encoding="utf-8")
_FIRST_UID = 2_000_000_000  # far above any real account: each slot's user owns nothing on the host


def slot_uid(slot: int, pid: int | None = None) -> int:
    """The user a slot's programs run as, its own for each process as well as each slot: two runs
    on one machine (two commands, Ray workers on one node) never share a user, whose processes
    the process limit counts together and whose leftovers would look like the other run's."""
    pid = os.getpid() if pid is None else pid
    return _FIRST_UID + (pid % (1 << 22)) * MAX_SLOTS + slot  # Linux pids stay below 2**22


INSTALL = (
    "running generated code needs bubblewrap (Debian/Ubuntu: apt install bubblewrap; Fedora: dnf install "
    "bubblewrap; Arch: pacman -S bubblewrap); or pass --isolation none-unsafe to run it without isolation"
)


class SandboxUnavailable(RuntimeError):
    """The isolation the config asks for cannot be had on this machine."""


@dataclass(frozen=True)
class Execution:
    """How one program ended."""

    kind: Kind
    returncode: int
    seconds: float
    stdout: str  # the tail
    stderr: str  # the tail

    @property
    def passed(self) -> bool:
        return self.kind == "passed"

    def error(self) -> str:
        """The exception a traceback on stderr ends with (the last line that is not a traceback's
        own: several processes of one program may interleave theirs), else the last line the
        program wrote to stderr, or the kind."""
        lines = [line.strip() for line in self.stderr.splitlines() if line.strip()]
        told = [line for line in lines if _EXCEPTION_LINE.match(line)]
        return told[-1] if told else lines[-1] if lines else self.kind


TAIL = 2000
# The line a traceback ends with: "ValueError: ...", "[Errno 11] ..." after an OSError's name.
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Warning)\b")


class Sandbox:
    """Runs programs under `config` (see the module's docstring). Thread-safe; `run_many` is
    parallel. Every call leaves no process or file behind."""

    def __init__(self, config: SandboxConfig | None = None, isolation: Isolation = "bubblewrap") -> None:
        self.config = config or SandboxConfig()
        self.isolation = isolation
        if isolation == "none-unsafe":
            _log.warning("running generated code WITHOUT isolation (limits only): it can reach the network and files")
        self._slots: queue.SimpleQueue[int] = queue.SimpleQueue()
        for slot in range(self.config.slots()):
            self._slots.put(slot)
        self._checked = False

    def available(self) -> None:
        """Raise `SandboxUnavailable` unless the isolation asked for can be had here, without
        running anything (the command's early check; `check` starts a sandbox)."""
        if self.isolation == "bubblewrap" and shutil.which("bwrap") is None:
            raise SandboxUnavailable(INSTALL)

    def check(self) -> None:
        """Raise `SandboxUnavailable` (one line: what to install) unless programs can run isolated."""
        if self._checked or self.isolation == "none-unsafe":
            self._checked = True
            return
        if shutil.which("bwrap") is None:
            raise SandboxUnavailable(INSTALL)
        probe = self.run("print('ok')", check=False)
        if not (probe.passed and probe.stdout.strip() == "ok"):
            raise SandboxUnavailable(
                f"bubblewrap is installed but could not start a sandbox ({probe.error()}); {INSTALL}"
            )
        self._checked = True

    def run(self, program: str, *, check: bool = True) -> Execution:
        """Run `program`, the text of a Python file, and say how it ended."""
        if check:
            self.check()
        slot = self._slots.get()
        try:
            return self._run(program, slot)
        finally:
            self._slots.put(slot)

    def run_many(self, programs: Iterable[str]) -> Iterator[Execution]:
        """Run `programs` on the config's slots at once; yields in the programs' order."""
        self.check()
        with ThreadPoolExecutor(self.config.slots(), thread_name_prefix="sandbox") as pool:
            yield from pool.map(self.run, programs)

    def _run(self, program: str, slot: int) -> Execution:
        config = self.config
        with tempfile.TemporaryDirectory(prefix="synth-sandbox-") as host:
            out_path, err_path = Path(host, "stdout"), Path(host, "stderr")
            limits = [
                config.memory_mb * 2**20,
                config.cpu_s,
                config.processes + _tasks_of(os.getuid()),
                config.output_kb * 1024,
                256,
                slot_uid(slot),
                slot_uid(slot),
            ]
            launcher = [_interpreter(), "-I", "-S", "-c", _LAUNCHER, *map(str, limits)]
            if self.isolation == "bubblewrap":
                command = [*_bwrap(config), *launcher]
                cwd = None
            else:
                command, cwd = launcher, os.path.join(host, "tmp")
                os.mkdir(cwd)
                os.chmod(cwd, 0o1777)  # writable by the unprivileged user the launcher becomes
            started = time.monotonic()
            with out_path.open("wb") as out, err_path.open("wb") as err:
                process = subprocess.Popen(
                    command,
                    stdin=subprocess.PIPE,
                    stdout=out,
                    stderr=err,
                    cwd=cwd,
                    env=_ENV if self.isolation == "none-unsafe" else {},
                    start_new_session=True,
                )
                timed_out = _feed_and_wait(process, program, config.timeout_s)
            seconds = time.monotonic() - started
            stdout, stderr = _tail(out_path), _tail(err_path)
        code = process.returncode
        config = self.config
        if timed_out:
            kind: Kind = "timeout"
        elif code < 0 or code > 128:  # a signal: bubblewrap reports its child's as 128 + the number
            number = -code if code < 0 else code - 128
            kind = _BY_SIGNAL.get(number, "exception")
            if number == signal.SIGKILL and seconds >= config.cpu_s:
                kind = "timeout"  # the CPU limit's hard end
        else:
            kind = _BY_CODE.get(code, "exception")
        return Execution(kind, code, seconds, stdout, stderr)


_ENV = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}


def _interpreter() -> str:
    """The installation's own interpreter (not a virtual environment's): the sandbox needs only
    the standard library, which lives under `sys.base_prefix`."""
    base = getattr(sys, "_base_executable", "") or sys.executable
    return os.path.realpath(base)


def _bwrap(config: SandboxConfig) -> list[str]:
    command = ["bwrap", "--die-with-parent", "--new-session", "--clearenv"]
    for name, value in _ENV.items():
        command += ["--setenv", name, value]
    command += ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    if os.geteuid() == 0:  # the launcher changes to an unprivileged user: keep only what that needs
        command += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        command += ["--unshare-user"]
    for top in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            command += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            command += ["--ro-bind", top, top]
    prefix = os.path.realpath(sys.base_prefix)
    if not prefix.startswith("/usr/") and prefix != "/usr":
        # The folders above the interpreter (a home folder, often private) are made open to pass
        # through, and hold nothing else.
        for parent in reversed(Path(prefix).parents[:-1]):
            command += ["--perms", "0755", "--dir", str(parent)]
        command += ["--ro-bind", prefix, prefix]
    command += ["--proc", "/proc", "--dev", "/dev"]
    command += ["--perms", "1777", "--size", str(config.tmp_mb * 2**20), "--tmpfs", "/tmp", "--chdir", "/tmp"]
    command += ["--hostname", "sandbox", "--"]
    return command


def _feed_and_wait(process: subprocess.Popen[bytes], program: str, timeout_s: float) -> bool:
    """Send the program, wait for the end; True if the wall time ran out (everything is killed)."""
    try:
        assert process.stdin is not None
        process.stdin.write(program.encode("utf-8", errors="replace"))
        process.stdin.close()
    except BrokenPipeError:
        pass
    try:
        process.wait(timeout=timeout_s)
        return False
    except subprocess.TimeoutExpired:
        _kill(process)
        return True
    finally:
        _kill(process)  # whatever of its session is still alive (a detached child under none-unsafe)


def _kill(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _tail(path: Path) -> str:
    size = path.stat().st_size
    with path.open("rb") as file:
        file.seek(max(0, size - TAIL * 4))
        return file.read().decode("utf-8", errors="replace")[-TAIL:]


def _tasks_of(uid: int) -> int:
    """Processes and threads `uid` has now (what its process limit counts), 0 for root: as root
    the program runs as a user of its own that has none."""
    if uid == 0:
        return 0
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    count += len(os.listdir(f"/proc/{entry.name}/task"))
            except OSError:
                continue
    return count
