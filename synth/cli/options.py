"""Options several commands share, and reading the config files they name."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, cast

import typer

if TYPE_CHECKING:
    from synth.schemas import EngineConfig
    from synth.schemas.curation import CurationConfig

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
    typer.Option(
        "--curation",
        help="Curation config file (TOML/YAML/JSON) applied to each batch before it is written. "
        "Default: heuristics, exact and near-duplicate removal against the whole dataset.",
    ),
]

OutOpt = Annotated[Path, typer.Option("--out", help="Dataset directory to create or add to.")]
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
