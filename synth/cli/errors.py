"""Errors on the command line: one `error:` line on stderr and an exit code, 2 for input the user can
fix, 1 for a fault at run time; the traceback only with -v/--verbose or SYNTH_DEBUG=1."""

from __future__ import annotations

import errno
import logging
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.text import Text
from typer.core import TyperGroup

from synth.cli.output import err
from synth.text import printable


class CLIError(Exception):
    """A fault the CLI reports as one line; `code` 2 for input the user can fix, 1 for a fault at run time."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def fail(message: str, code: int = 2) -> NoReturn:
    raise CLIError(message, code)


@dataclass
class _State:
    """What the error line needs to know about the command that is running."""

    verbose: bool = False  # -v/--verbose was given
    writing_to: Path | None = None  # the dataset or file the command writes, named when the disk fills


state = _State()

# The package's own error types, recognized by name (nothing to import on the error path), with
# their exit code. A subclass takes the code of the first of its classes listed here.
_KNOWN_ERRORS = {
    "ConfigFileError": 2,
    "SeedFileError": 2,
    "SourceError": 2,
    "DocumentError": 2,
    "CurationInputError": 2,
    "CalibrationInputError": 2,
    "SelectionInputError": 2,
    "BenchmarkFileError": 2,
    "IndexMismatchError": 2,
    "EngineConfigError": 2,
    "MagpieError": 2,
    "CodeSeedError": 2,
    "SandboxUnavailable": 2,
    "TemplateError": 2,
    "StateError": 2,
    "DatasetBusyError": 1,
    "DatasetError": 2,
    "EngineError": 1,
    "RedisUnavailableError": 1,
}
# Paths the user can fix; any other OSError is a fault at run time.
_USER_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.EISDIR, errno.ENOTDIR, errno.ENOENT, errno.ENAMETOOLONG}


def _chain(exc: BaseException, every: bool = False) -> list[BaseException]:
    """`exc` and what it was raised from, outermost first, with the members of exception groups
    (Prefect and anyio wrap errors in both ways). `every` follows suppressed contexts too."""
    seen: set[int] = set()
    out: list[BaseException] = []

    def walk(e: BaseException | None) -> None:
        while e is not None and id(e) not in seen and len(out) < 100:
            seen.add(id(e))
            out.append(e)
            if isinstance(e, BaseExceptionGroup):
                for member in e.exceptions:
                    walk(member)
            e = e.__cause__ or (e.__context__ if every or not e.__suppress_context__ else None)

    walk(exc)
    return out


def _known_code(e: BaseException) -> int | None:
    if isinstance(e, CLIError):
        return e.code
    for cls in type(e).__mro__:
        if cls.__module__.startswith("synth.") and cls.__name__ in _KNOWN_ERRORS:
            return _KNOWN_ERRORS[cls.__name__]
    return None


def _os_message(e: OSError) -> str:
    what = e.strerror or str(e)
    if e.filename is None:
        return what
    if e.filename2 is not None:
        return f"{e.filename} -> {e.filename2}: {what}"
    return f"{e.filename}: {what}"


def _validation_message(e: Any) -> str:
    problems = "; ".join(f"{'.'.join(str(x) for x in err['loc']) or '(top)'}: {err['msg']}" for err in e.errors())
    return f"invalid {e.title}: {problems}"


def describe(exc: BaseException) -> tuple[str, int]:
    """The one line that reports `exc` and the exit code: 2 for input the user can fix (paths,
    configs, value ranges), 1 for a fault at run time (engine, Redis, disk, Prefect)."""
    from pydantic import ValidationError

    from synth.shards.atomic import disk_full

    for e in _chain(exc, every=True):
        if disk_full(e):
            where = getattr(e, "filename", None) or state.writing_to or "the dataset"
            return (
                f"disk full while writing {where}: what was committed is kept; free space and re-run to resume",
                1,
            )
    chain = _chain(exc)
    for e in chain:
        code = _known_code(e)
        if code is not None:
            return str(e), code
        if isinstance(e, ValidationError):
            return _validation_message(e), 2
        if isinstance(e, OSError):
            return _os_message(e), 2 if e.errno in _USER_ERRNOS else 1
    # Unexpected: report the first error that is not one of Prefect's wrappers around it.
    real = next((e for e in chain if not type(e).__module__.startswith(("prefect", "anyio"))), chain[-1])
    return f"unexpected {type(real).__name__}: {real} (re-run with -v for the traceback)", 1


def _debug(ctx: Any = None) -> bool:
    """Whether errors show their traceback: -v/--verbose, or SYNTH_DEBUG=1."""
    verbose = bool(ctx.find_root().params.get("verbose")) if ctx is not None else state.verbose
    return verbose or os.environ.get("SYNTH_DEBUG", "").lower() in {"1", "true", "yes"}


def log_tracebacks_off() -> None:
    """Prefect logs a failed task or flow with its traceback; the `error:` line that ends the
    command says what happened (and -v shows the traceback). Its log lines stay, one line each."""
    if _debug():
        return
    loggers = [logging.getLogger()] + [
        logger
        for name, logger in logging.Logger.manager.loggerDict.items()
        if isinstance(logger, logging.Logger) and name.startswith("prefect")
    ]
    for logger in loggers:
        for handler in logger.handlers:
            formatter = handler.formatter
            patched = getattr(formatter, "_synth_one_line", False)
            if isinstance(handler, logging.StreamHandler) and formatter is not None and not patched:
                formatter.format = _one_line(formatter.format)  # type: ignore[method-assign]
                formatter._synth_one_line = True  # type: ignore[attr-defined]


def _one_line(format: Any) -> Any:
    def without_traceback(record: logging.LogRecord) -> str:
        # Another handler may have cached the traceback's text on the record: hide both.
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        try:
            return str(format(record))
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved

    return without_traceback


def report(exc: BaseException, traceback_too: bool = False) -> int:
    """Print `exc` as one `error: ...` line on stderr (after its traceback if asked); returns the exit code."""
    message, code = describe(exc)
    if traceback_too:
        traceback.print_exception(exc, file=sys.stderr)
        sys.stderr.flush()
    # One line, however the message was built; a file name or record text quoted in it is shown
    # with its control characters escaped, never obeyed by the terminal.
    line = " ".join(printable(message).split())
    if len(line) > 2000:
        line = line[:2000] + " ..."
    # Text, not markup: record text and paths such as `[/INST]` or `[/b]` print as they are.
    err.print(Text.assemble(("error: ", "bold red"), line), soft_wrap=True, highlight=False)
    return code


class ReportingGroup(TyperGroup):
    """The top-level command group: any error a command raises ends as one line and an exit code,
    and the engines a command built are closed when it ends (`synth.cli.ending`). A few generators'
    commands are also top-level commands (`SHORTCUTS`: `synth recycle` is `synth generate recycle`)."""

    SHORTCUTS = ("recycle",)

    def list_commands(self, ctx: Any) -> list[str]:
        return [*super().list_commands(ctx), *self.SHORTCUTS]

    def get_command(self, ctx: Any, name: str) -> Any:
        found = super().get_command(ctx, name)
        if found is None and name in self.SHORTCUTS:
            generate = super().get_command(ctx, "generate")
            found = generate.get_command(ctx, name) if isinstance(generate, TyperGroup) else None
        return found

    def invoke(self, ctx: Any) -> Any:  # the command line library's Context
        from synth.cli.ending import engines_released

        state.writing_to = None
        with engines_released():  # on success, on an error and on Ctrl-C alike
            try:
                return super().invoke(ctx)
            except Exception as e:
                if type(e).__module__.partition(".")[0] in {"typer", "click"}:
                    raise  # usage errors, exits and aborts: the command line's own
                debug = _debug(ctx)
                if not debug:
                    # The error line ends the output: no "Stopping temporary server" after it.
                    logging.getLogger("prefect").setLevel(logging.WARNING)
                raise typer.Exit(report(e, traceback_too=debug)) from None
