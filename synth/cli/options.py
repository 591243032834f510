"""Options several commands share, and reading the config files they name.

Every path a command takes is declared with `path_option` or `path_argument`: an empty path
(`--out ''`) is refused, naming the option, where it would otherwise mean the working directory.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, cast

import typer

if TYPE_CHECKING:
    from synth.schemas import EngineConfig
    from synth.schemas.curation import CurationConfig


def _path_parser(name: str) -> Callable[[Any], Path]:
    """Turns a command-line value into a Path, refusing an empty one: Path("") is the working
    directory, so `--out ''` would write a dataset there by accident."""
    from synth.cli.errors import fail

    def parse(value: Any) -> Path:
        if isinstance(value, Path):
            return value
        if not str(value):
            fail(f"{name}: an empty path names no file or folder (for this folder, give '.')")
        return Path(value)

    return parse


def path_option(*declarations: str, **settings: Any) -> Any:
    """`typer.Option` for a path (or a list of paths): an empty value is refused, naming the option."""
    return typer.Option(*declarations, parser=_path_parser(declarations[0]), **settings)


def path_argument(name: str, **settings: Any) -> Any:
    """`typer.Argument` for a path (or a list of paths) shown as `name`: an empty value is refused."""
    return typer.Argument(parser=_path_parser(name), **settings)


EngineOpt = Annotated[
    Path | None,
    path_option(
        "--engine-config",
        envvar="SYNTH_ENGINE_CONFIG",
        help="Engine config file (TOML/YAML/JSON): kind vllm|openai|scripted, model, dtype, max_model_len, "
        "tensor_parallel_size, sampling... Default: $SYNTH_ENGINE_CONFIG if set, else in-process vLLM on the "
        "embedded model.",
    ),
]


ProfileOpt = Annotated[
    str,
    typer.Option(
        "--profile",
        help="'paper': the method as published (the default). 'small-model': settings the small embedded "
        "model needs; docs/generators/ lists each difference.",
    ),
]


LanguageOpt = Annotated[
    str,
    typer.Option(
        "--language",
        help="The language to write in (ISO 639-1: en, zh, ...): picks the built-in seeds and prompt templates "
        "(built in: en, zh) and what the language check expects.",
    ),
]


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
    path_option(
        "--curation",
        help="Curation config file (TOML/YAML/JSON) applied to each batch before it is written. "
        "Default: exact and near-duplicate removal against the whole dataset, plus the heuristics in "
        "profiles other than paper (whose method filters as it generates).",
    ),
]

OutOpt = Annotated[Path, path_option("--out", help="Dataset directory to create or add to.")]
ShardRowsOpt = Annotated[int, typer.Option(min=1, help="Maximum rows per Parquet shard.")]


def load_engine(path: Path | None) -> EngineConfig:
    """The engine config file at `path`; none: in-process vLLM on the embedded model."""
    from synth.schemas import EngineSettings, VLLMEngineConfig, load_config_file

    if path is None:
        return VLLMEngineConfig()
    return cast(EngineSettings, load_config_file(path, EngineSettings)).engine


def load_curation(path: Path | None) -> CurationConfig:
    """The curation config file at `path`; none: the default curation."""
    from synth.schemas import load_config_file
    from synth.schemas.curation import CurationConfig

    return cast(CurationConfig, load_config_file(path, CurationConfig)) if path else CurationConfig()


def where(path: Path | None, prefix: str = "") -> str:
    """How an error names the config file a value came from: `path: `, or `prefix` for none."""
    return f"{path}: " if path is not None else prefix


@dataclass(frozen=True)
class RunOptions:
    """The options every `synth generate` command takes, declared once (see `run_options`)."""

    out: Path
    engine_config: Path | None
    language: str
    seed: int
    shard_rows: int
    wait: float
    curation: Path | None
    profile: str | None = "paper"  # None: the generator has no profiles

    def config_fields(self) -> dict[str, Any]:
        """What a generator config takes from these: language and seed, and the profile if any."""
        chosen = {"language": self.language, "seed": self.seed}
        return chosen | ({"profile": self.profile} if self.profile is not None else {})


_Command = TypeVar("_Command", bound=Callable[..., None])


def run_options(seed_help: str, profile: bool = True) -> Callable[[_Command], _Command]:
    """Give a command the shared options, after its own, and hand them to it as one `run:
    RunOptions` argument, once the process is ready to run flows (`api.prepare_process`).
    `seed_help` says what the run seed decides; `profile` False leaves out --profile (a generator
    without profiles)."""
    shared: dict[str, tuple[Any, Any]] = {
        "out": (OutOpt, inspect.Parameter.empty),
        "engine_config": (EngineOpt, None),
        "profile": (ProfileOpt, "paper"),
        "language": (LanguageOpt, "en"),
        "seed": (Annotated[int, typer.Option(help=seed_help)], 0),
        "shard_rows": (ShardRowsOpt, 10_000),
        "wait": (WaitOpt, 0),
        "curation": (CurationOpt, None),
    }
    if not profile:
        del shared["profile"]
    assert set(shared) | {"profile"} == {f.name for f in fields(RunOptions)}

    def wrap(command: _Command) -> _Command:
        own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name != "run"]
        added = [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=kind, default=default)
            for name, (kind, default) in shared.items()
        ]
        keyword = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]

        @functools.wraps(command)
        def with_options(**given: Any) -> None:
            from synth.flows import api

            api.prepare_process(given["out"])
            chosen: dict[str, Any] = {name: given.pop(name) for name in shared}
            run = RunOptions(**({"profile": None} | chosen))
            command(**given, run=run)

        with_options.__signature__ = inspect.Signature([*keyword, *added])  # type: ignore[attr-defined]
        return cast(_Command, with_options)

    return wrap
