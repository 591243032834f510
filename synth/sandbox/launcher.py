"""The first code that runs inside the sandbox: limits, then the program, then a classified exit.

This file is never imported by the package: the sandbox passes its text to the isolated
interpreter with `-c` (so nothing of the host's file system needs to be visible to run it). It
reads the program from standard input, caps its own resources (they pass to every process it
starts), gives up root for an unprivileged user where it was started as root, and runs the program
as `__main__` of a file named `solution.py`. How the program ended is the exit status: 0 when it
ran to the end (or called `sys.exit(0)`), otherwise one of the codes below, which the host turns
into the reject's kind. A program can fake a failure code, never a pass it did not earn by exiting
0, which is what any test harness that runs code has to trust.

Arguments: address-space bytes, CPU seconds, processes, file bytes, open files, uid, gid (the
last two are used only when started as root).
"""

import errno
import linecache
import os
import resource
import sys
import traceback

EXCEPTION, ASSERTION, MEMORY, REFUSED, OUTPUT, EXITED = 101, 102, 103, 104, 105, 106
# Errors the sandbox itself causes: no network, a read-only or absent file system, no permission,
# no more processes.
_REFUSALS = {
    errno.EACCES,
    errno.EPERM,
    errno.EROFS,
    errno.ENETUNREACH,
    errno.ECONNREFUSED,
    errno.EHOSTUNREACH,
    errno.EADDRNOTAVAIL,
    errno.EAGAIN,
}


def _limit(which: int, value: int) -> None:
    resource.setrlimit(which, (value, value))


def main() -> None:
    memory, cpu, processes, file_bytes, files, uid, gid = (int(a) for a in sys.argv[1:8])
    program = sys.stdin.read()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 - the program's standard input: empty
    _limit(resource.RLIMIT_CORE, 0)
    _limit(resource.RLIMIT_AS, memory)
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))  # soft: SIGXCPU; hard: SIGKILL
    _limit(resource.RLIMIT_NPROC, processes)
    _limit(resource.RLIMIT_FSIZE, file_bytes)
    _limit(resource.RLIMIT_NOFILE, files)
    if os.geteuid() == 0:  # started as root: run the program as a user that owns nothing
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    linecache.cache["solution.py"] = (len(program), None, program.splitlines(True), "solution.py")
    sys.argv = ["solution.py"]
    sys.path.insert(0, os.getcwd())
    scope = {"__name__": "__main__", "__file__": "solution.py", "__builtins__": __builtins__}
    try:
        exec(compile(program, "solution.py", "exec"), scope)
    except SystemExit as stop:
        if stop.code in (None, 0):
            _flush_and_exit(0)
        _print(stop)
        _flush_and_exit(EXITED)
    except BaseException as error:
        _print(error)
        _flush_and_exit(_kind(error))
    _flush_and_exit(0)


def _print(error: BaseException) -> None:
    """The traceback from the program's own frames on (this file's frame left out)."""
    tb = error.__traceback__
    traceback.print_exception(type(error), error, tb.tb_next if tb is not None else None)


def _kind(error: BaseException) -> int:
    if isinstance(error, AssertionError):
        return ASSERTION
    if isinstance(error, MemoryError):
        return MEMORY
    if isinstance(error, OSError) and error.errno == errno.EFBIG:
        return OUTPUT
    if isinstance(error, OSError) and error.errno in _REFUSALS:
        return REFUSED
    return EXCEPTION


def _flush_and_exit(code: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            code = code or OUTPUT
    os._exit(code)


main()
