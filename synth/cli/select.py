"""`synth select`: pick a budget of records from a dataset into another (Deita, IFD, longest
responses, k-center, random), or compare several methods on the same budget."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer
from rich.table import Table
from rich.text import Text

from synth.cli.checks import check_dataset, check_out, writing
from synth.cli.errors import fail
from synth.cli.options import EngineOpt, WaitOpt, load_engine, path_argument, path_option
from synth.cli.output import console, err

if TYPE_CHECKING:
    from synth.schemas.selection import MethodRow


def _methods(value: str) -> list[str]:
    from synth.schemas.selection import SELECTION_METHODS

    methods = [m.strip() for m in value.split(",") if m.strip()]
    for m in methods:
        if m not in SELECTION_METHODS:
            fail(f"--compare {m!r}: choose among {', '.join(SELECTION_METHODS)}")
    if len(set(methods)) != len(methods) or not methods:
        fail("--compare: name each method once, comma-separated")
    return methods


def select(
    dataset: Annotated[Path, path_argument("DATASET", help="Dataset directory to select from (its kept records).")],
    out: Annotated[
        Path, path_option("--out", help="Dataset to write the selection into (with --compare: a folder of them).")
    ],
    budget: Annotated[int, typer.Option("--budget", min=1, help="Records to select.")],
    method: Annotated[
        str, typer.Option("--method", help="deita, ifd, longest, kcenter or random (see docs/selection.md).")
    ] = "deita",
    compare: Annotated[
        str | None,
        typer.Option(
            "--compare",
            help="Methods to compare on the same budget, e.g. random,longest,deita: "
            "one dataset each in OUT/METHOD and one table.",
        ),
    ] = None,
    threshold: Annotated[
        float, typer.Option("--threshold", min=0, max=2, help="deita: least cosine distance to every selected record.")
    ] = 0.1,
    seed: Annotated[int, typer.Option("--seed", help="random: the draw; kcenter: the first center.")] = 0,
    language: Annotated[str, typer.Option("--language", help="Language of the scorers' prompts (en, zh).")] = "en",
    engine_config: EngineOpt = None,
    embedding_config: Annotated[
        Path | None,
        path_option(
            "--embedding-config",
            help="Embedding config file (TOML/YAML/JSON, `embedding: {kind: ...}`): "
            "hidden-states (default: the embedded model's), vllm or openai.",
        ),
    ] = None,
    scores: Annotated[
        Path | None,
        path_option(
            "--scores", help="Where scores and embeddings are stored for reuse (default: DATASET/index/selection)."
        ),
    ] = None,
    reference: Annotated[
        Path | None,
        path_option(
            "--evaluate",
            help="With --compare: reference pairs (JSONL/Parquet) for the proxy loss of "
            "`synth evaluate` on each subset (fine-tunes once per method: minutes each).",
        ),
    ] = None,
    wait: WaitOpt = 0,
) -> None:
    """Select the best BUDGET records of a dataset into a new dataset; every record left out is kept
    as a reject (stage selection, or score where a scorer failed)."""
    from synth.flows import api
    from synth.schemas import load_config_file
    from synth.schemas.selection import SELECTION_METHODS, EmbeddingSettings, SelectionConfig

    api.prepare_process(out)
    if method not in SELECTION_METHODS:
        fail(f"--method {method!r}: choose one of {', '.join(SELECTION_METHODS)}")
    methods = _methods(compare) if compare else [method]
    if reference is not None and not compare:
        fail("--evaluate goes with --compare")
    if reference is not None and not reference.exists():
        fail(f"--evaluate {reference}: no such file")
    if not (dataset / "manifest.json").is_file():
        fail(f"{dataset}: no manifest.json; not a dataset directory")
    check_dataset(dataset)  # a damaged shard is named now, not after Prefect and the engine start
    from synth.shards.layout import read_manifest

    if read_manifest(dataset).rows("kept") == 0:
        fail(f"{dataset}: no kept records to select from")
    embedding = (
        cast(EmbeddingSettings, load_config_file(embedding_config, EmbeddingSettings)).embedding
        if embedding_config
        else None
    )
    fields: dict[str, Any] = dict(method=methods[0], budget=budget, threshold=threshold, seed=seed, language=language)
    if embedding is not None:
        fields["embedding"] = embedding
    config = SelectionConfig(**fields)
    engine = load_engine(engine_config)
    if compare:
        for m in methods:
            check_out(out / m, "--out")
    else:
        check_out(out)
    from synth.flows.selection import compare_methods, select_dataset

    def say(line: str) -> None:
        err.print(Text(line), soft_wrap=True)

    with writing(out):
        if compare:
            rows = compare_methods(
                dataset,
                out,
                methods,
                config,
                engine_config=engine,
                scores=scores,
                reference=reference,
                wait=wait,
                say=say,
            )
            print_comparison(rows, budget)
        else:
            summary = select_dataset(dataset, out, config, engine_config=engine, scores=scores, wait=wait, say=say)
            print_comparison([{**summary, "proxy_loss": None}], budget)
            console.print(
                Text(f"{summary['kept']} selected, {summary['rejected']} left out as rejects; written to {out}"),
                soft_wrap=True,
            )


def _number(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def print_comparison(rows: Sequence[MethodRow], budget: int) -> None:
    """One row per method: N, mean Deita score, mean response tokens, diversity, proxy loss."""
    table = Table(title=f"Selection, budget {budget}", title_justify="left")
    columns = ["method", "N", "mean deita score", "mean tokens", "mean ifd", "diversity", "proxy loss", "dataset"]
    for column in columns:
        table.add_column(column, justify="left" if column in ("method", "dataset") else "right", overflow="fold")
    for row in rows:
        table.add_row(
            Text(row["method"]),
            str(row["selected"]),
            _number(row.get("mean_deita_score"), 2),
            _number(row.get("mean_response_tokens"), 1),
            _number(row.get("mean_ifd"), 3),
            _number(row.get("diversity"), 4),
            _number(row.get("proxy_loss"), 4),
            Text(row["dataset"]),
        )
    console.print(table)
    console.print(
        Text(
            "diversity: mean cosine distance from each selected record to its nearest other one (higher: more "
            "diverse); proxy loss: loss per token on the reference pairs after fine-tuning on the subset (lower: "
            "better)."
        ),
        soft_wrap=True,
    )
