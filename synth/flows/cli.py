"""The `synth` command line."""

from __future__ import annotations

import errno
import logging
import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

console = Console()
err = Console(stderr=True)


# -- errors: one line on stderr, exit 2 for input the user can fix, 1 for a fault at run time ---------


class CLIError(Exception):
    """A fault the CLI reports as one line; `code` 2 for input the user can fix, 1 for a fault at run time."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


# The package's own error types, recognized by name (nothing to import on the error path), with
# their exit code. A subclass takes the code of the first of its classes listed here.
_KNOWN_ERRORS = {
    "ConfigFileError": 2,
    "SeedFileError": 2,
    "SourceError": 2,
    "DocumentError": 2,
    "CurationInputError": 2,
    "BenchmarkFileError": 2,
    "IndexMismatchError": 2,
    "EngineConfigError": 2,
    "DatasetBusyError": 1,
    "DatasetError": 2,
    "EngineError": 1,
    "RedisUnavailableError": 1,
}
# Paths the user can fix; any other OSError is a fault at run time.
_USER_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.EISDIR, errno.ENOTDIR, errno.ENOENT, errno.ENAMETOOLONG}
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
_writing_to: Path | None = None  # the dataset or file the command writes, named when the disk fills


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


def _is_disk_full(e: BaseException) -> bool:
    if isinstance(e, OSError) and e.errno in _DISK_FULL:
        return True
    text = str(e)  # a library that reports the OS error only in its message (Rust's io::Error)
    return "No space left on device" in text or "Disk quota exceeded" in text


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

    for e in _chain(exc, every=True):
        if _is_disk_full(e):
            where = getattr(e, "filename", None) or _writing_to or "the dataset"
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
    verbose = bool(ctx.find_root().params.get("verbose")) if ctx is not None else _verbose
    return verbose or os.environ.get("SYNTH_DEBUG", "").lower() in {"1", "true", "yes"}


_verbose = False


def _log_tracebacks_off() -> None:
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
    line = " ".join(message.split())  # one line, however the message was built
    if len(line) > 2000:
        line = line[:2000] + " ..."
    # Text, not markup: record text and paths such as `[/INST]` or `[/b]` print as they are.
    err.print(Text.assemble(("error: ", "bold red"), line), soft_wrap=True, highlight=False)
    return code


class _ReportingGroup(TyperGroup):
    """The top-level command group: any error a command raises ends as one line and an exit code."""

    def invoke(self, ctx: Any) -> Any:  # the command line library's Context
        global _writing_to
        _writing_to = None
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


app = typer.Typer(
    cls=_ReportingGroup,
    help="Manufacture and curate instruction-tuning data with a local model.\n\n"
    "Exit codes: 0 done; 2 bad input (a path, a config, a value out of range); 1 a fault at run time "
    "(engine, Redis, disk, Prefect server). Errors are one line; -v or SYNTH_DEBUG=1 adds the traceback.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
generate_app = typer.Typer(help="Run one generator into a dataset directory.", no_args_is_help=True)
app.add_typer(generate_app, name="generate")


@app.callback()
def _options(
    verbose: Annotated[
        bool, typer.Option("-v", "--verbose", help="On an error, show its traceback too (or set SYNTH_DEBUG=1).")
    ] = False,
) -> None:
    """Options of every command."""
    global _verbose
    _verbose = verbose


EngineOpt = Annotated[
    Path | None,
    typer.Option(
        "--engine-config",
        help="Engine config file (TOML/YAML/JSON): kind vllm|openai, model, dtype, max_model_len, "
        "tensor_parallel_size, sampling... Default: in-process vLLM on the embedded model.",
    ),
]


ProfileOpt = Annotated[
    str,
    typer.Option(
        "--profile",
        help="'paper': the method as published (the default). 'small-model': settings the small embedded "
        "model needs; the README lists each difference.",
    ),
]


def print_profile(config: Any) -> None:
    """Say which profile a run used, and what it changed from the paper's settings."""
    changed = type(config).profile_changes(config.profile)
    if changed:
        console.print(
            Text(f"profile {config.profile}: not the paper's settings for {', '.join(sorted(changed))}", style="yellow")
        )


WaitOpt = Annotated[
    float,
    typer.Option(
        "--wait",
        min=0,
        help="Seconds to wait for another command writing the same dataset to finish (default: stop at "
        "once, naming it).",
    ),
]


CurationOpt = Annotated[
    Path | None,
    typer.Option(
        "--curation",
        help="Curation config file (TOML/YAML/JSON) applied to each batch before it is written. "
        "Default: heuristics, exact and near-duplicate removal against the whole dataset.",
    ),
]


def _load_curation(path: Path | None) -> Any:
    from synth.schemas import load_config_file
    from synth.schemas.curation import CurationConfig

    return load_config_file(path, CurationConfig) if path else CurationConfig()


def _quiet_libraries() -> None:
    from synth.flows.lifeline import hold_lifeline

    hold_lifeline()  # the temporary Prefect server and vLLM's processes end with this one
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # A local run's temporary Prefect server would try to send usage data and log its failure.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Prefect gives its temporary server 20 s to start; a busy 2-core laptop can take longer.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _fail(message: str, code: int = 2) -> None:
    raise CLIError(message, code)


# -- preflight: what would fail after a flow (and a Prefect server) started fails first, in a second ---

_DATASET_ENTRIES = {"data", "rejects", ".lock"}  # a folder holding only these is an empty dataset


def _is_temp(path: Path) -> bool:
    return path.name.startswith(".") and path.name.endswith(".tmp")


def _existing_ancestor(path: Path) -> Path:
    current = path.absolute()
    while not current.exists() and current != current.parent:
        current = current.parent
    return current


def _check_writable_parent(path: Path, flag: str) -> None:
    parent = _existing_ancestor(path.parent)
    if not parent.is_dir():
        _fail(f"{flag} {path}: cannot be created: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        _fail(f"{flag} {path}: cannot be created: {parent} is not writable")


def check_out(out: Path, flag: str = "--out") -> None:
    """A dataset folder to create or add to: an existing dataset (its manifest must read), an
    empty folder, or a path whose parent can be created and written."""
    from synth.shards.store import MANIFEST, read_manifest

    if out.is_dir():
        if (out / MANIFEST).exists():
            read_manifest(out)  # a damaged manifest is refused here, naming it, before anything starts
        else:
            foreign = sorted(p.name for p in out.iterdir() if p.name not in _DATASET_ENTRIES and not _is_temp(p))
            if foreign:
                _fail(
                    f"{flag} {out}: folder is not empty and holds no dataset (no {MANIFEST}; it holds {foreign[0]!r}"
                    f"{' and more' if len(foreign) > 1 else ''}); choose another {flag}"
                )
        if not os.access(out, os.W_OK | os.X_OK):
            _fail(f"{flag} {out}: folder is not writable")
        return
    if out.exists() or out.is_symlink():
        _fail(f"{flag} {out}: exists and is not a folder")
    _check_writable_parent(out, flag)


def check_out_file(out: Path, flag: str = "--out") -> None:
    """A file to write: not a folder, in a folder that exists or can be created, and is writable."""
    if out.is_dir():
        _fail(f"{flag} {out}: is a folder; give the path of a file")
    if out.exists() and not os.access(out, os.W_OK):
        _fail(f"{flag} {out}: file is not writable")
    _check_writable_parent(out, flag)


def check_engine(config: Any, where: str) -> None:
    """The engine config names nothing missing and its server answers; `where` prefixes the key."""
    from synth.engines import EngineConfigError, EngineError
    from synth.engines import check_engine as check

    try:
        check(config)
    except EngineConfigError as e:
        _fail(f"{where}{e}")
    except EngineError as e:
        _fail(f"{where}{e}", 1)


def check_curation(config: Any, where: str) -> None:
    """Files the curation config names exist, and its Redis answers (when the index lives there)."""
    minhash = config.minhash
    if minhash.enabled and minhash.backend == "redis":
        import redis

        try:
            client = redis.Redis.from_url(minhash.redis_url, socket_connect_timeout=3, socket_timeout=3)
        except ValueError as e:
            _fail(f"{where}minhash.redis_url: {minhash.redis_url!r} is not a Redis URL ({e})")
        try:
            client.ping()
        except redis.RedisError as e:
            _fail(f"{where}minhash.redis_url: Redis at {minhash.redis_url} is not reachable ({e}); start it", 1)
        finally:
            client.close()
    for benchmark in config.decontamination.benchmarks:
        if not Path(benchmark).is_file():
            _fail(f"{where}decontamination.benchmarks: {benchmark}: no such file")
    if config.novelty.enabled and config.novelty.reference and not Path(config.novelty.reference).exists():
        _fail(f"{where}novelty.reference: {config.novelty.reference}: no such file or folder")
    if config.judge.enabled and config.judge.rubric and not Path(config.judge.rubric).is_file():
        _fail(f"{where}judge.rubric: {config.judge.rubric}: no such file")


def check_prefect_api() -> None:
    """A flow reports to the Prefect server PREFECT_API_URL names: fail at once, naming it, when it
    does not answer (with none configured, Prefect starts a temporary one of its own)."""
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        _check_server()


def _where(path: Path | None, prefix: str = "") -> str:
    return f"{path}: " if path is not None else prefix


def preflight(
    out: Path | None,
    engines: list[tuple[Any, str]],
    curation: Any,
    curation_where: str,
    flow: bool = True,
) -> None:
    """Every check a run can make before it starts, cheapest first."""
    if out is not None:
        check_out(out)
    check_curation(curation, curation_where)
    for config, where in engines:
        check_engine(config, where)
    if flow:
        check_prefect_api()


@contextmanager
def writing(out: Path) -> Iterator[None]:
    """While a command writes `out`: name it if the disk fills, and if the command created the
    folder and fails before anything was committed, remove it again (no empty dataset is left)."""
    global _writing_to
    top = None if out.exists() else _topmost_missing(out)
    _writing_to = out
    try:
        yield
    except BaseException:
        if top is not None:
            _remove_if_empty(out, top)
        raise


def _topmost_missing(path: Path) -> Path:
    current = path.absolute()
    while not current.parent.exists() and current.parent != current:
        current = current.parent
    return current


def _remove_if_empty(out: Path, top: Path) -> None:
    """Remove `out` and its new parents up to `top` if the failed command left an empty dataset
    there: a manifest with no run and no shard (or none), its card, empty shard folders, the lock
    (taken first, so a writer that started meanwhile is never pulled from under). Best effort:
    anything else stays, and so does the folder then."""
    import fcntl

    from synth.shards.store import MANIFEST, read_manifest

    if not out.is_dir() or out.is_symlink():
        return
    try:
        manifest = read_manifest(out)
    except Exception:
        return
    if manifest.runs or manifest.shards:
        return  # something was committed: it is kept
    try:
        with open(out / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            entries = [e for e in out.iterdir() if e.name != ".lock"]
            folders = [e for e in entries if e.is_dir() and not e.is_symlink()]
            files = [e for e in entries if e.name in {MANIFEST, "README.md"} or _is_temp(e)]
            if len(folders) + len(files) != len(entries) or any(any(f.iterdir()) for f in folders):
                return  # something this cleanup does not know: leave everything as it is
            for entry in folders:
                entry.rmdir()
            for entry in files:
                entry.unlink()
            (out / ".lock").unlink()
    except OSError:
        return
    current = out.absolute()
    while True:
        try:
            current.rmdir()
        except OSError:
            return
        if current == top or current.parent == current:
            return
        current = current.parent


def _load_engine(path: Path | None) -> Any:
    from synth.schemas import EngineSettings, VLLMEngineConfig, load_config_file

    if path is None:
        return VLLMEngineConfig()
    return load_config_file(path, EngineSettings).engine  # type: ignore[attr-defined]


def print_summary(summary: dict[str, Any]) -> None:
    """Records kept, rejects by stage and reason, and where the shards are (data printed literally)."""
    table = Table(title="Rejects by stage and reason", show_lines=False)
    table.add_column("stage")
    table.add_column("reason")
    table.add_column("count", justify="right")
    for stage, reasons in sorted(summary["rejects_by_reason"].items()):
        for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
            table.add_row(Text(str(stage)), Text(str(reason)), str(n))
    console.print(table)
    path = Path(summary["dataset"])
    status = "" if summary["reached_target"] else " [yellow](stopped at the batch budget before the target)[/]"
    console.print(
        f"[bold green]{summary['kept']} records kept[/], {summary['rejected']} rejected, "
        f"in {summary['batches']} batches (run {escape(str(summary['run_id']))}){status}"
    )
    console.print(
        Text(
            f"shards: {path / 'data'}/*.parquet   rejects: {path / 'rejects'}/*.parquet   "
            f"manifest: {path / 'manifest.json'}"
        )
    )


@generate_app.command("self-instruct")
def generate_self_instruct(
    out: Annotated[Path, typer.Option("--out", help="Dataset directory to create or add to.")],
    seeds: Annotated[
        Path | None,
        typer.Option("--seeds", help="Seed tasks: Self-Instruct release JSONL, JSONL of instructions, or .txt."),
    ] = None,
    num: Annotated[int, typer.Option("--num", min=1, help="Records (instances) to keep.")] = 100,
    engine_config: EngineOpt = None,
    prompts_per_batch: Annotated[int, typer.Option(min=1, help="Task-generation prompts per batch.")] = 16,
    max_batches: Annotated[int, typer.Option(min=1, help="Budget: stop after this many batches.")] = 50,
    instances_per_task: Annotated[
        int | None, typer.Option(min=1, help="Instances to keep per new task (default: the profile's; paper: 5).")
    ] = None,
    profile: ProfileOpt = "paper",
    seed: Annotated[int, typer.Option(help="Run seed (sampling of in-context tasks and of the model).")] = 0,
    shard_rows: Annotated[int, typer.Option(min=1, help="Maximum rows per Parquet shard.")] = 10_000,
    wait: WaitOpt = 0,
    curation: CurationOpt = None,
) -> None:
    """Self-Instruct (Wang et al. 2022): grow new tasks and instances from seed tasks.

    Re-running the same command resumes the run; a larger --num extends it.
    """
    _quiet_libraries()
    from synth.generators.seeds import load_seed_tasks
    from synth.schemas import DatasetConfig, SelfInstructConfig

    engine = _load_engine(engine_config)
    load_seed_tasks(seeds)
    given = {"instances_per_task": instances_per_task} if instances_per_task is not None else {}
    config = SelfInstructConfig(
        seeds=str(seeds) if seeds else None,
        num_records=num,
        prompts_per_batch=prompts_per_batch,
        max_batches=max_batches,
        profile=profile,
        seed=seed,
        **given,
    )
    curation_config = _load_curation(curation)
    preflight(out, [(engine, _where(engine_config))], curation_config, _where(curation))
    from synth.flows.self_instruct import self_instruct_flow

    _log_tracebacks_off()

    with writing(out):
        summary = self_instruct_flow(
            config=config,
            dataset=DatasetConfig(path=str(out), shard_rows=shard_rows, wait=wait),
            engine=engine,
            curation=curation_config,
        )
    print_summary(summary)
    print_profile(config)


@generate_app.command("evol")
def generate_evol(
    source: Annotated[
        str,
        typer.Option(
            "--from",
            help="Instructions to evolve: a dataset directory, a JSONL, JSON array (Alpaca format) or Parquet "
            "file, or a seed file.",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Dataset directory to create or add to.")],
    rounds: Annotated[int, typer.Option("--rounds", min=1, help="Rounds of evolution.")] = 4,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Evolve only the first N instructions.")] = None,
    include_source: Annotated[
        bool | None,
        typer.Option(
            "--include-source/--no-include-source",
            help="Write the source examples too, as round 0 (the paper's training mix; on by default); "
            "a source without an output gets the model's response.",
        ),
    ] = None,
    profile: ProfileOpt = "paper",
    chunk_size: Annotated[int, typer.Option(min=1, help="Instructions per committed batch.")] = 256,
    engine_config: EngineOpt = None,
    seed: Annotated[int, typer.Option(help="Run seed (choice of operations and the model's sampling).")] = 0,
    shard_rows: Annotated[int, typer.Option(min=1, help="Maximum rows per Parquet shard.")] = 10_000,
    wait: WaitOpt = 0,
    curation: CurationOpt = None,
) -> None:
    """Evol-Instruct (Xu et al. 2023): rewrite instructions into harder (in-depth) or rarer
    (in-breadth) ones over several rounds, eliminating failed evolutions with a reason.

    Re-running the same command resumes the run.
    """
    _quiet_libraries()
    from synth.generators.sources import load_instructions
    from synth.schemas import DatasetConfig, EvolInstructConfig

    engine = _load_engine(engine_config)
    load_instructions(source)  # fail fast on a bad source, before any model loads
    chosen = {"include_source": include_source} if include_source is not None else {}
    config = EvolInstructConfig(
        source=source, rounds=rounds, limit=limit, chunk_size=chunk_size, profile=profile, seed=seed, **chosen
    )
    curation_config = _load_curation(curation)
    preflight(out, [(engine, _where(engine_config))], curation_config, _where(curation))
    from synth.flows.evol_instruct import evol_instruct_flow

    _log_tracebacks_off()

    with writing(out):
        summary = evol_instruct_flow(
            config=config,
            dataset=DatasetConfig(path=str(out), shard_rows=shard_rows, wait=wait),
            engine=engine,
            curation=curation_config,
        )
    rows = [
        {"round": r, "in": f["in"], "evolved": f["evolved"], **{"eliminated": sum(f["eliminated"].values())}}
        for r, f in summary["rounds"].items()
    ]
    console.print(_table("Rounds", rows, ["round", "in", "evolved", "eliminated"]))
    print_summary(summary)
    print_profile(config)


@generate_app.command("backtranslate")
def generate_backtranslate(
    docs: Annotated[
        Path, typer.Option("--docs", help="Folder of .txt/.md/.html files, or a JSONL/Parquet file with a text field.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Dataset directory to create or add to.")],
    seeds: Annotated[
        Path | None,
        typer.Option(
            "--seeds",
            help="Seed (instruction, output) pairs for the backward prompts: JSONL or a JSON array (Alpaca format). "
            "Pairs with an input or a reference to text not shown are skipped. Default: the built-in pairs.",
        ),
    ] = None,
    rounds: Annotated[
        int, typer.Option("--rounds", min=1, help="Iterations; curated pairs join the next round's few-shot pool.")
    ] = 1,
    min_score: Annotated[
        int, typer.Option("--min-score", min=1, max=5, help="Keep pairs graded at least this (5 strict, 4 permissive).")
    ] = 5,
    text_field: Annotated[str, typer.Option(help="Text field or column of a JSONL/Parquet source.")] = "text",
    max_segments: Annotated[int | None, typer.Option(min=1, help="Use only the first N segments.")] = None,
    chunk_size: Annotated[int, typer.Option(min=1, help="Segments per committed batch.")] = 128,
    engine_config: EngineOpt = None,
    backward_engine_config: Annotated[
        Path | None,
        typer.Option("--backward-engine-config", help="A separate engine for the backward (instruction-writing) step."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Run seed.")] = 0,
    shard_rows: Annotated[int, typer.Option(min=1, help="Maximum rows per Parquet shard.")] = 10_000,
    wait: WaitOpt = 0,
    curation: CurationOpt = None,
) -> None:
    """Instruction backtranslation (Li et al. 2023): write the instruction each document segment
    answers, grade the pairs on a 5-point rubric, keep the best.

    Re-running the same command resumes the run.
    """
    _quiet_libraries()
    from synth.generators.documents import read_documents
    from synth.generators.seed_pairs import load_seed_pairs
    from synth.schemas import BacktranslationConfig, DatasetConfig

    engine = _load_engine(engine_config)
    backward = _load_engine(backward_engine_config) if backward_engine_config else None
    if seeds is not None:
        load_seed_pairs(seeds)  # fail fast on a bad seed file, before any model loads
    config = BacktranslationConfig(
        docs=str(docs), seeds=str(seeds) if seeds else None, rounds=rounds, min_score=min_score,
        text_field=text_field, max_segments=max_segments, chunk_size=chunk_size, seed=seed,
    )  # fmt: skip
    read_documents(docs, text_field)  # fail fast on a source that cannot be read at all
    curation_config = _load_curation(curation)
    engines = [(engine, _where(engine_config))]
    if backward is not None:
        engines.append((backward, _where(backward_engine_config)))
    preflight(out, engines, curation_config, _where(curation))
    from synth.flows.backtranslation import backtranslation_flow

    _log_tracebacks_off()

    with writing(out):
        summary = backtranslation_flow(
            config=config,
            dataset=DatasetConfig(path=str(out), shard_rows=shard_rows, wait=wait),
            engine=engine,
            curation=curation_config,
            backward_engine=backward,
        )
    funnel = summary["funnel"]
    console.print(
        f"documents {funnel.get('documents', 0)} (skipped {sum(funnel.get('documents_skipped', {}).values())}), "
        f"segments {funnel.get('segments', 0)} (dropped {sum(funnel.get('segments_dropped', {}).values())})"
    )
    if pairs := funnel.get("seeds"):
        skipped = ", ".join(f"{n} {reason}" for reason, n in pairs["skipped"].items())
        console.print(
            Text(f"seed pairs {pairs['used']} from {pairs['file']}" + (f" (skipped {skipped})" if skipped else ""))
        )
    rows = [
        {"round": r, "graded": f["graded"], "unparseable": f["unparseable"], "kept": f["kept"],
         "scores": ", ".join(f"{s}: {n}" for s, n in sorted(f["scores"].items()))}
        for r, f in funnel.get("rounds", {}).items()
    ]  # fmt: skip
    console.print(_table("Rounds", rows, ["round", "graded", "unparseable", "kept", "scores"]))
    print_summary(summary)


@app.command("run")
def run_recipe(recipe: Annotated[Path, typer.Argument(help="Recipe file (YAML, TOML or JSON).")]) -> None:
    """Run every step of a recipe once, in order, into its dataset, on the recipe's runner (this
    process, or a Ray cluster). Re-running resumes where an interrupted run stopped."""
    _quiet_libraries()
    from synth.schemas.recipe import load_recipe

    loaded = load_recipe(recipe)
    out = Path(loaded.dataset.path)
    _check_step_inputs(loaded)
    preflight(out, [(loaded.engine, f"{recipe}: engine.")], loaded.curation, f"{recipe}: curation.")
    from synth.flows.recipe import recipe_flow

    _log_tracebacks_off()

    with writing(out):
        summaries = recipe_flow(recipe=loaded)
    for summary in summaries:
        console.print(Text(str(summary["generator"]), style="bold"))
        print_summary(summary)


def _check_step_inputs(recipe: Any) -> None:
    """Read each step's input as `synth generate` does before it starts, so a malformed seed file
    or source fails naming its file and line, not inside the flow."""
    from synth.generators.documents import read_documents
    from synth.generators.seed_pairs import load_seed_pairs
    from synth.generators.seeds import load_seed_tasks
    from synth.generators.sources import load_instructions
    from synth.schemas.recipe import EvolInstructStep, SelfInstructStep

    own = Path(recipe.dataset.path).resolve()
    for step in recipe.steps:
        if isinstance(step, SelfInstructStep):
            load_seed_tasks(step.seeds)
        elif isinstance(step, EvolInstructStep):
            if Path(step.source).resolve() != own:  # the recipe's own dataset may not exist yet
                load_instructions(step.source)
        else:
            read_documents(step.docs, step.text_field)
            if step.seeds is not None:
                load_seed_pairs(step.seeds)


@app.command("serve")
def serve_recipe(recipes: Annotated[list[Path], typer.Argument(help="Recipe files with a schedule.")]) -> None:
    """Register the recipes' schedules as deployments on the Prefect server (PREFECT_API_URL) and
    run them as they come due, until stopped."""
    _quiet_libraries()
    from synth.schemas.recipe import load_recipe

    for path in recipes:
        if load_recipe(path).schedule is None:
            _fail(f"{path}: no 'schedule'; use `synth run` for a one-off run")
    _check_server()
    from synth.flows.recipe import serve_recipes

    serve_recipes(list(recipes))


def _check_server() -> None:
    """Fail with the URL when the configured Prefect server does not answer."""
    import httpx
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        _fail("no Prefect server configured: start one (`prefect server start`) and set PREFECT_API_URL")
    try:
        httpx.get(f"{url.rstrip('/')}/health", timeout=5).raise_for_status()
    except httpx.HTTPError as e:
        _fail(f"the Prefect server at {url} (PREFECT_API_URL) is not reachable: {e}", 1)


@app.command("curate")
def curate(
    target: Annotated[
        Path, typer.Argument(help="A dataset directory (curated in place) or a JSONL/Parquet file of records.")
    ],
    out: Annotated[Path | None, typer.Option("--out", help="Dataset to curate a file into (new or existing).")] = None,
    config_file: Annotated[
        Path | None,
        typer.Option("--config", help="Curation config (TOML/YAML/JSON); default: heuristics, exact and near dedup."),
    ] = None,
    benchmark: Annotated[
        list[Path] | None, typer.Option("--benchmark", help="Benchmark prompts to decontaminate against (repeatable).")
    ] = None,
    judge: Annotated[bool, typer.Option("--judge", help="Also score records with the model on the rubric.")] = False,
    engine_config: EngineOpt = None,
    rebuild_index: Annotated[
        bool, typer.Option("--rebuild-index", help="Rebuild the dataset's MinHash index with the current settings.")
    ] = False,
    wait: WaitOpt = 0,
) -> None:
    """Curate records: heuristics, exact and near-duplicate removal across the whole dataset,
    optional ROUGE-L novelty, decontamination and model-judged quality; every drop is a reject
    with its stage and reason."""
    _quiet_libraries()
    from synth.engines import get_engine
    from synth.flows.curation import curate_dataset, curate_file
    from synth.schemas import load_config_file
    from synth.schemas.curation import CurationConfig

    config = load_config_file(config_file, CurationConfig) if config_file else CurationConfig()
    assert isinstance(config, CurationConfig)
    if benchmark:
        config.decontamination.benchmarks += [str(b) for b in benchmark]
    if judge:
        config.judge.enabled = True
    engine_settings = _load_engine(engine_config) if config.judge.enabled else None
    if target.is_dir():
        if out is not None:
            _fail("--out is for curating a file; a dataset directory is curated in place")
    elif out is None:
        _fail(f"{target}: give --out DIR to curate a file into a dataset")
    elif not target.exists():
        _fail(f"{target}: no such file or folder")
    engines = [(engine_settings, _where(engine_config))] if engine_settings is not None else []
    preflight(None if target.is_dir() else out, engines, config, _where(config_file), flow=False)
    engine = get_engine(engine_settings) if engine_settings is not None else None
    if target.is_dir():  # in-place curation always rebuilds the dataset's index afterwards
        summary = curate_dataset(target, config, engine=engine, wait=wait)
    else:
        assert out is not None
        with writing(out):
            summary = curate_file(target, out, config, engine=engine, wait=wait, rebuild_index=rebuild_index)
    console.print(f"{summary['records_in']} records in")
    if summary["benchmark_hits"]:
        hits = [{"benchmark item": item, "records": n} for item, n in summary["benchmark_hits"].items()]
        console.print(_table("Benchmark items hit", hits, ["benchmark item", "records"]))
    print_summary(summary)


@app.command("inspect")
def inspect_dataset(
    path: Annotated[Path, typer.Argument(help="Dataset directory.")],
    sample: Annotated[int, typer.Option("--sample", min=0, help="Show N random kept records.")] = 3,
    rejects: Annotated[bool, typer.Option("--rejects", help="Show N random rejects with their reasons too.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole summary as JSON, for scripts.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the random samples.")] = 0,
) -> None:
    """Summarize a dataset: funnel by stage and reason, generator mix, lengths, scores, samples."""
    import json

    from synth.shards.summary import summarize

    summary = summarize(path, sample=sample, seed=seed)
    if as_json:
        print(json.dumps(summary, indent=2, default=str))
        return
    _print_inspection(summary, show_rejects=rejects)


def _table(title: str, rows: list[dict[str, Any]], columns: list[str]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(row.get(c)) for c in columns))
    return table


def _cell(value: Any) -> Text:
    """A table cell printed as it is: record text such as `[/INST]` is not Rich markup."""
    if isinstance(value, float):
        return Text(f"{value:.2f}")
    return Text("" if value is None else str(value))


def _print_inspection(summary: dict[str, Any], show_rejects: bool) -> None:
    console.print(
        f"[bold]{escape(str(summary['path']))}[/]: [green]{summary['kept']} kept[/], {summary['rejected']} rejected "
        f"(keep rate {summary['keep_rate']:.1%})"
    )
    console.print(_table("Runs", summary["runs"], ["run_id", "generator", "model", "status", "kept", "rejected"]))
    console.print(_table("Funnel", summary["funnel"], ["stage", "reason", "count"]))
    console.print(_table("Generators", summary["generators"], ["generator", "count"]))
    console.print(_table("Lengths (words)", summary["lengths"], ["field", "mean", "p50", "p90", "max"]))
    console.print(_table("Leading verbs", summary["leading_verbs"], ["verb", "count"]))
    for key, title, column in (
        ("judge_scores", "Judge scores", "judge_score"),
        ("evolution_rounds", "Evolution rounds", "round"),
        ("sources", "Source documents", "source_doc"),
    ):
        if summary[key]:
            console.print(_table(title, summary[key], [column, "count"]))
    if summary["samples"]:
        console.print(_table("Sample records", summary["samples"], ["instruction", "input", "output"]))
    if show_rejects and summary["reject_samples"]:
        console.print(_table("Sample rejects", summary["reject_samples"], ["stage", "reason", "instruction", "detail"]))


@app.command("export")
def export_dataset(
    path: Annotated[Path, typer.Argument(help="Dataset directory.")],
    fmt: Annotated[str, typer.Option("--format", help="jsonl | alpaca | sharegpt | messages")] = "messages",
    out: Annotated[Path | None, typer.Option("--out", help="Output file (default: DIR/export/FORMAT.jsonl).")] = None,
) -> None:
    """Write the kept records as JSON lines for tools that want them: all columns, Alpaca, ShareGPT or chat messages."""
    from synth.shards.export import FORMATS, export
    from synth.shards.store import MANIFEST

    if fmt not in FORMATS:
        _fail(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if not (path / MANIFEST).is_file():
        _fail(f"{path}: no {MANIFEST}; not a dataset folder")
    target = out or path / "export" / f"{fmt}.jsonl"
    check_out_file(target)
    global _writing_to
    _writing_to = target
    rows = export(path, fmt, target)  # type: ignore[arg-type]
    console.print(Text(f"{rows} records written to {target}"))


@app.command("prepare-model")
def prepare_model() -> None:
    """Convert the embedded default model once into the local cache (done on first use otherwise)."""
    from synth.engines.embedded import ensure_embedded_model

    path = ensure_embedded_model()
    console.print(Text(f"embedded model ready: {path}"))


@app.command("verify")
def verify_dataset(
    path: Annotated[Path, typer.Argument(help="Dataset directory.")],
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="Move damaged and unlisted shards to DIR/quarantine/ and rewrite the manifest with what "
            "remains (rebuilt from the shards when it is lost or unreadable). Nothing is deleted.",
        ),
    ] = False,
) -> None:
    """Check every shard the manifest lists (present, size, checksum, row count, readable) and list
    files it does not; exits 1 naming each problem. With --repair, set the problems aside."""
    from synth.shards import DatasetError
    from synth.shards.repair import check
    from synth.shards.repair import repair as repair_dataset

    try:
        if repair:
            report, moved = repair_dataset(path)
        else:
            report, moved = check(path), []
    except DatasetError as e:
        _fail(str(e))
    for line in report.problems():
        (console if repair else err).print(escape(line), highlight=False, soft_wrap=True)
    if repair:
        for entry in moved:
            console.print(escape(f"set aside {entry.path} -> {entry.moved_to or '(was missing)'}: {entry.reason}"))
        if report.manifest_error:
            console.print(escape(f"{path}: manifest rebuilt from the shards that could be read"))
        console.print(escape(f"{path}: repaired; {len(moved)} file(s) set aside, nothing deleted"))
        return
    if not report.ok:
        err.print(
            escape(f"{path}: {len(report.problems())} problem(s); `synth verify {path} --repair` sets them aside")
        )
        raise typer.Exit(1)
    console.print(escape(f"{path}: {report.shards} shards, {report.rows} rows, all match the manifest"))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
