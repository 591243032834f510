"""`synth curate`: curate a dataset in place, or a file of records into a dataset."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from synth.cli.checks import preflight, writing
from synth.cli.errors import fail
from synth.cli.options import EngineOpt, WaitOpt, load_curation, load_engine, path_argument, path_option, where
from synth.cli.output import print_curation
from synth.flows import api

if TYPE_CHECKING:
    from synth.shards.record_files import RecordsFile


def curate(
    target: Annotated[
        Path, path_argument("TARGET", help="A dataset directory (curated in place) or a JSONL/Parquet file of records.")
    ],
    out: Annotated[Path | None, path_option("--out", help="Dataset to curate a file into (new or existing).")] = None,
    config_file: Annotated[
        Path | None,
        path_option(
            "--curation",
            "--config",  # the earlier name, kept working for a release
            help="Curation config (TOML/YAML/JSON), as for `synth generate`; default: heuristics, exact and near "
            "dedup. (`--config` is the old name.)",
        ),
    ] = None,
    benchmark: Annotated[
        list[Path] | None, path_option("--benchmark", help="Benchmark prompts to decontaminate against (repeatable).")
    ] = None,
    judge: Annotated[bool, typer.Option("--judge", help="Also score records with the model on the rubric.")] = False,
    language: Annotated[
        str | None,
        typer.Option(
            "--language",
            help="The data's language (ISO 639-1, e.g. zh): the heuristics' phrase lists, and for a language "
            "other than English the language check and ability tags (by the model). Default: the config's, else en.",
        ),
    ] = None,
    engine_config: EngineOpt = None,
    rebuild_index: Annotated[
        bool, typer.Option("--rebuild-index", help="Rebuild the dataset's MinHash index with the current settings.")
    ] = False,
    wait: WaitOpt = 0,
) -> None:
    """Curate records: heuristics, exact and near-duplicate removal across the whole dataset,
    optional ROUGE-L novelty, decontamination and model-judged quality; every drop is a reject
    with its stage and reason."""
    api.prepare_process(target if target.is_dir() else out)
    config = api.with_curate_options(load_curation(config_file), benchmark or [], judge, language)
    engine = load_engine(engine_config) if config.uses_model() else None  # read only when it is used
    if target.is_dir():
        if out is not None:
            fail("--out is for curating a file; a dataset directory is curated in place")
    elif out is None:
        fail(f"{target}: give --out DIR to curate a file into a dataset")
    elif not target.exists():
        fail(f"{target}: no such file or folder")
    engines = [(engine, where(engine_config))] if engine is not None else []
    preflight(out, engines, config, where(config_file), flow=False)
    source: Path | RecordsFile = target
    if not target.is_dir():
        from synth.shards.record_files import RecordsFile

        source = RecordsFile.open(target)  # a bad record fails here, naming its line, before Prefect loads
    # In place, the dataset exists; a file's records go into `out`, removed again if left empty.
    with writing(out) if out is not None else nullcontext():
        summary = api.curate(source, config, out=out, engine=engine, wait=wait, rebuild_index=rebuild_index)
    print_curation(summary)
