"""The `synth` command line."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Manufacture and curate instruction-tuning data with a local model.", no_args_is_help=True)
generate_app = typer.Typer(help="Run one generator into a dataset directory.", no_args_is_help=True)
app.add_typer(generate_app, name="generate")
console = Console()
err = Console(stderr=True)

EngineOpt = Annotated[
    Path | None,
    typer.Option(
        "--engine-config",
        help="Engine config file (TOML/YAML/JSON): kind vllm|openai, model, dtype, max_model_len, "
        "tensor_parallel_size, sampling... Default: in-process vLLM on the embedded model.",
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
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # A local run's temporary Prefect server would try to send usage data and log its failure.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Prefect gives its temporary server 20 s to start; a busy 2-core laptop can take longer.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _fail(message: str) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _load_engine(path: Path | None) -> Any:
    from synth.schemas import EngineSettings, VLLMEngineConfig, load_config_file

    if path is None:
        return VLLMEngineConfig()
    return load_config_file(path, EngineSettings).engine  # type: ignore[attr-defined]


def print_summary(summary: dict[str, Any]) -> None:
    """Records kept, rejects by stage and reason, and where the shards are."""
    table = Table(title="Rejects by stage and reason", show_lines=False)
    table.add_column("stage")
    table.add_column("reason")
    table.add_column("count", justify="right")
    for stage, reasons in sorted(summary["rejects_by_reason"].items()):
        for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
            table.add_row(stage, reason, str(n))
    console.print(table)
    path = Path(summary["dataset"])
    status = "" if summary["reached_target"] else " [yellow](stopped at the batch budget before the target)[/]"
    console.print(
        f"[bold green]{summary['kept']} records kept[/], {summary['rejected']} rejected, "
        f"in {summary['batches']} batches (run {summary['run_id']}){status}"
    )
    console.print(
        f"shards: {path / 'data'}/*.parquet   rejects: {path / 'rejects'}/*.parquet   manifest: {path / 'manifest.json'}"
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
    instances_per_task: Annotated[int, typer.Option(min=1, help="Instances to keep per new task.")] = 1,
    seed: Annotated[int, typer.Option(help="Run seed (sampling of in-context tasks and of the model).")] = 0,
    shard_rows: Annotated[int, typer.Option(min=1, help="Maximum rows per Parquet shard.")] = 10_000,
    curation: CurationOpt = None,
) -> None:
    """Self-Instruct (Wang et al. 2022): grow new tasks and instances from seed tasks.

    Re-running the same command resumes the run; a larger --num extends it.
    """
    _quiet_libraries()
    from synth.engines import EngineError
    from synth.generators.seeds import SeedFileError, load_seed_tasks
    from synth.schemas import ConfigFileError, DatasetConfig, SelfInstructConfig
    from synth.shards import DatasetError

    try:
        engine = _load_engine(engine_config)
        load_seed_tasks(seeds)
        config = SelfInstructConfig(
            seeds=str(seeds) if seeds else None,
            num_records=num,
            prompts_per_batch=prompts_per_batch,
            max_batches=max_batches,
            instances_per_task=instances_per_task,
            seed=seed,
        )
        from synth.flows.self_instruct import self_instruct_flow

        summary = self_instruct_flow(
            config=config,
            dataset=DatasetConfig(path=str(out), shard_rows=shard_rows),
            engine=engine,
            curation=_load_curation(curation),
        )
    except (SeedFileError, ConfigFileError, DatasetError, EngineError) as e:
        _fail(str(e))
    print_summary(summary)


@generate_app.command("evol")
def generate_evol(
    source: Annotated[
        str,
        typer.Option(
            "--from", help="Instructions to evolve: a dataset directory, a JSONL or Parquet file, or a seed file."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Dataset directory to create or add to.")],
    rounds: Annotated[int, typer.Option("--rounds", min=1, help="Rounds of evolution.")] = 4,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Evolve only the first N instructions.")] = None,
    chunk_size: Annotated[int, typer.Option(min=1, help="Instructions per committed batch.")] = 256,
    engine_config: EngineOpt = None,
    seed: Annotated[int, typer.Option(help="Run seed (choice of operations and the model's sampling).")] = 0,
    shard_rows: Annotated[int, typer.Option(min=1, help="Maximum rows per Parquet shard.")] = 10_000,
    curation: CurationOpt = None,
) -> None:
    """Evol-Instruct (Xu et al. 2023): rewrite instructions into harder (in-depth) or rarer
    (in-breadth) ones over several rounds, eliminating failed evolutions with a reason.

    Re-running the same command resumes the run.
    """
    _quiet_libraries()
    from synth.engines import EngineError
    from synth.generators.sources import SourceError, load_instructions
    from synth.schemas import ConfigFileError, DatasetConfig, EvolInstructConfig
    from synth.shards import DatasetError

    try:
        engine = _load_engine(engine_config)
        load_instructions(source)  # fail fast on a bad source, before any model loads
        config = EvolInstructConfig(source=source, rounds=rounds, limit=limit, chunk_size=chunk_size, seed=seed)
        from synth.flows.evol_instruct import evol_instruct_flow

        summary = evol_instruct_flow(
            config=config,
            dataset=DatasetConfig(path=str(out), shard_rows=shard_rows),
            engine=engine,
            curation=_load_curation(curation),
        )
    except (SourceError, ConfigFileError, DatasetError, EngineError) as e:
        _fail(str(e))
    rows = [
        {"round": r, "in": f["in"], "evolved": f["evolved"], **{"eliminated": sum(f["eliminated"].values())}}
        for r, f in summary["rounds"].items()
    ]
    console.print(_table("Rounds", rows, ["round", "in", "evolved", "eliminated"]))
    print_summary(summary)


@generate_app.command("backtranslate")
def generate_backtranslate(
    docs: Annotated[
        Path, typer.Option("--docs", help="Folder of .txt/.md/.html files, or a JSONL/Parquet file with a text field.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Dataset directory to create or add to.")],
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
    curation: CurationOpt = None,
) -> None:
    """Instruction backtranslation (Li et al. 2023): write the instruction each document segment
    answers, grade the pairs on a 5-point rubric, keep the best.

    Re-running the same command resumes the run.
    """
    _quiet_libraries()
    from synth.engines import EngineError
    from synth.generators.documents import DocumentError
    from synth.schemas import BacktranslationConfig, ConfigFileError, DatasetConfig
    from synth.shards import DatasetError

    try:
        engine = _load_engine(engine_config)
        backward = _load_engine(backward_engine_config) if backward_engine_config else None
        config = BacktranslationConfig(
            docs=str(docs), rounds=rounds, min_score=min_score, text_field=text_field,
            max_segments=max_segments, chunk_size=chunk_size, seed=seed,
        )  # fmt: skip
        from synth.flows.backtranslation import backtranslation_flow
        from synth.generators.documents import read_documents

        read_documents(docs, text_field)  # fail fast on a source that cannot be read at all
        summary = backtranslation_flow(
            config=config,
            dataset=DatasetConfig(path=str(out), shard_rows=shard_rows),
            engine=engine,
            curation=_load_curation(curation),
            backward_engine=backward,
        )
    except (DocumentError, ConfigFileError, DatasetError, EngineError) as e:
        _fail(str(e))
    funnel = summary["funnel"]
    console.print(
        f"documents {funnel.get('documents', 0)} (skipped {sum(funnel.get('documents_skipped', {}).values())}), "
        f"segments {funnel.get('segments', 0)} (dropped {sum(funnel.get('segments_dropped', {}).values())})"
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
    from synth.engines import EngineError
    from synth.filters.redis_index import RedisUnavailableError
    from synth.generators.documents import DocumentError
    from synth.generators.seeds import SeedFileError
    from synth.generators.sources import SourceError
    from synth.schemas import ConfigFileError
    from synth.schemas.recipe import load_recipe
    from synth.shards import DatasetError

    try:
        loaded = load_recipe(recipe)
        from synth.flows.recipe import recipe_flow

        summaries = recipe_flow(recipe=loaded)
    except (
        ConfigFileError, SeedFileError, SourceError, DocumentError, DatasetError, EngineError, RedisUnavailableError
    ) as e:  # fmt: skip
        _fail(str(e))
    for summary in summaries:
        console.print(f"[bold]{summary['generator']}[/]")
        print_summary(summary)


@app.command("serve")
def serve_recipe(recipes: Annotated[list[Path], typer.Argument(help="Recipe files with a schedule.")]) -> None:
    """Register the recipes' schedules as deployments on the Prefect server (PREFECT_API_URL) and
    run them as they come due, until stopped."""
    _quiet_libraries()
    from synth.schemas import ConfigFileError
    from synth.schemas.recipe import load_recipe

    try:
        for path in recipes:
            if load_recipe(path).schedule is None:
                _fail(f"{path}: no 'schedule'; use `synth run` for a one-off run")
        _check_server()
    except ConfigFileError as e:
        _fail(str(e))
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
        _fail(f"the Prefect server at {url} is not reachable: {e}")


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
) -> None:
    """Curate records: heuristics, exact and near-duplicate removal across the whole dataset,
    optional ROUGE-L novelty, decontamination and model-judged quality; every drop is a reject
    with its stage and reason."""
    _quiet_libraries()
    from synth.engines import EngineError, get_engine
    from synth.filters.decontamination import BenchmarkFileError
    from synth.filters.dedup import IndexMismatchError, MinHashIndex
    from synth.flows.curation import CurationInputError, curate_dataset, curate_file
    from synth.schemas import ConfigFileError, load_config_file
    from synth.schemas.curation import CurationConfig
    from synth.shards import DatasetError

    try:
        config = load_config_file(config_file, CurationConfig) if config_file else CurationConfig()
        assert isinstance(config, CurationConfig)
        if benchmark:
            config.decontamination.benchmarks += [str(b) for b in benchmark]
        if judge:
            config.judge.enabled = True
        engine = get_engine(_load_engine(engine_config)) if config.judge.enabled else None
        if target.is_dir():
            if out is not None:
                _fail("--out is for curating a file; a dataset directory is curated in place")
            if rebuild_index:
                MinHashIndex.open(target, config.minhash, rebuild=True)
            summary = curate_dataset(target, config, engine=engine)
        else:
            if out is None:
                _fail(f"{target}: give --out DIR to curate a file into a dataset")
            assert out is not None
            if rebuild_index and (out / "manifest.json").is_file():
                MinHashIndex.open(out, config.minhash, rebuild=True)
            summary = curate_file(target, out, config, engine=engine)
    except (
        ConfigFileError,
        CurationInputError,
        BenchmarkFileError,
        IndexMismatchError,
        DatasetError,
        EngineError,
    ) as e:
        _fail(str(e))
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

    from synth.shards import DatasetError
    from synth.shards.summary import summarize

    try:
        summary = summarize(path, sample=sample, seed=seed)
    except DatasetError as e:
        _fail(str(e))
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


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return "" if value is None else str(value)


def _print_inspection(summary: dict[str, Any], show_rejects: bool) -> None:
    console.print(
        f"[bold]{summary['path']}[/]: [green]{summary['kept']} kept[/], {summary['rejected']} rejected "
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
    from synth.shards import DatasetError
    from synth.shards.export import FORMATS, export

    if fmt not in FORMATS:
        _fail(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    target = out or path / "export" / f"{fmt}.jsonl"
    try:
        rows = export(path, fmt, target)  # type: ignore[arg-type]
    except DatasetError as e:
        _fail(str(e))
    console.print(f"{rows} records written to {target}")


@app.command("prepare-model")
def prepare_model() -> None:
    """Convert the embedded default model once into the local cache (done on first use otherwise)."""
    from synth.engines import EngineError
    from synth.engines.embedded import ensure_embedded_model

    try:
        path = ensure_embedded_model()
    except EngineError as e:
        _fail(str(e))
    console.print(f"embedded model ready: {path}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
