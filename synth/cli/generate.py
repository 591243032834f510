"""`synth generate`: run one generator (Self-Instruct, Evol-Instruct, backtranslation, Magpie, preference
pairs) into a dataset.

Each command reads its options into configs, has the registry check its seeds or sources (a bad
file fails before any model loads), checks everything else a run needs, then calls the flow. The
commands here are written by hand; a registry entry without one gets a command built from its
config (`synth.cli.derived`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from synth.cli.checks import preflight, writing
from synth.cli.derived import generator_group
from synth.cli.errors import fail, log_tracebacks_off
from synth.cli.options import RunOptions, load_curation, load_engine, run_options, source_option, where
from synth.cli.output import (
    console,
    live_progress,
    print_backtranslation_funnel,
    print_evol_rounds,
    print_profile,
    print_self_training,
    print_summary,
)
from synth.flows.registry import GENERATORS


def _run(
    generator: str,
    run: RunOptions,
    options: dict[str, Any],
    more_engines: list[tuple[Any, str]] | None = None,
    report: Callable[[dict[str, Any]], None] | None = None,
    **flow_args: Any,
) -> None:
    """Build the generator's config (its class from the registry) from the command's `options` and
    the shared ones (an option left None takes the config's default, or its profile's), check
    everything the run needs, run the generator's flow into the run's dataset with its engine
    (`more_engines` are checked too), then print its summary (after the generator's own `report`)
    and what its profile changed."""
    from synth.schemas import DatasetConfig

    given = {name: value for name, value in options.items() if value is not None}
    config = GENERATORS[generator].config(**given, **run.config_fields())
    out, curation, shard_rows, wait = run.out, run.curation, run.shard_rows, run.wait
    engines = [(load_engine(run.engine_config), where(run.engine_config)), *(more_engines or [])]

    GENERATORS[generator].check_inputs(config, out)  # a bad seed file or source fails before any model loads
    curation_config = load_curation(curation)
    preflight(out, engines, curation_config, where(curation))

    log_tracebacks_off()
    from synth.engines import engines_opened

    # engines_opened: vLLM's engine processes stop when the run ends, not at interpreter exit
    with engines_opened(), writing(out), live_progress():
        summary = GENERATORS[generator].flow(
            config=config,
            dataset=DatasetConfig(path=str(out), shard_rows=shard_rows, wait=wait),
            engine=engines[0][0],
            curation=curation_config,
            **flow_args,
        )
    if report is not None:
        report(summary)
    print_summary(summary)
    if hasattr(type(config), "profile_changes"):
        print_profile(config)


# The generators with a command of their own below (options of their own making: other flag names,
# engines to load), by command name; every other registry entry, Self-Instruct and Magpie among
# them, gets one built from its config's fields (`synth.cli.derived`).
WRITTEN = {"evol_instruct": "evol", "backtranslation": "backtranslate", "preferences": "preferences"}
app = typer.Typer(
    cls=generator_group(lambda *args: _run(*args), WRITTEN),
    help="Run one generator into a dataset directory.",
    no_args_is_help=True,
)


@app.command("evol")
@run_options(seed_help="Run seed (choice of operations and the model's sampling).")
def generate_evol(
    source: Annotated[str, source_option("evolve")],
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
    chunk_size: Annotated[int, typer.Option(min=1, help="Instructions per committed batch.")] = 256,
    *,
    run: RunOptions,
) -> None:
    """Evol-Instruct (Xu et al. 2023): rewrite instructions into harder (in-depth) or rarer
    (in-breadth) ones over several rounds, eliminating failed evolutions with a reason.

    Re-running the same command resumes the run.
    """
    options = dict(source=source, rounds=rounds, limit=limit, chunk_size=chunk_size, include_source=include_source)
    _run("evol_instruct", run, options, report=print_evol_rounds)


@app.command("backtranslate")
@run_options(seed_help="Run seed.", profile=False)
def generate_backtranslate(
    docs: Annotated[
        Path, typer.Option("--docs", help="Folder of .txt/.md/.html files, or a JSONL/Parquet file with a text field.")
    ],
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
    backward_engine_config: Annotated[
        Path | None,
        typer.Option("--backward-engine-config", help="A separate engine for the backward (instruction-writing) step."),
    ] = None,
    self_train: Annotated[
        bool,
        typer.Option(
            "--self-train",
            help="The paper's self-training loop: fine-tune a backward model and graders on the seed pairs "
            "(LoRA on the engine's model; needs the in-process vLLM engine).",
        ),
    ] = False,
    iterations: Annotated[
        int, typer.Option("--iterations", min=0, max=10, help="With --self-train: re-grading iterations after M0.")
    ] = 2,
    train_steps: Annotated[
        int | None, typer.Option("--train-steps", min=1, help="With --self-train: steps per model (default 3 epochs).")
    ] = None,
    work: Annotated[
        Path | None,
        typer.Option(
            "--work", help="With --self-train: folder for the models and iterations (default OUT.self-train)."
        ),
    ] = None,
    *,
    run: RunOptions,
) -> None:
    """Instruction backtranslation (Li et al. 2023): write the instruction each document segment
    answers, grade the pairs on a 5-point rubric, keep the best.

    Without --self-train the model is prompted few-shot for both steps; with it, the paper's loop
    runs: a fine-tuned backward model writes the instructions, a model tuned on the seeds (M0)
    grades them, and each iteration tunes M_k on the seeds plus the pairs kept so far and
    re-grades every candidate. Re-running the same command resumes the run (trained models are
    reused).
    """
    from synth.schemas.self_train import SelfTrainConfig

    engine = load_engine(run.engine_config)
    backward = load_engine(backward_engine_config) if backward_engine_config else None
    if self_train and backward is not None:
        fail("--backward-engine-config: with --self-train the backward model is trained, not configured")
    if self_train and engine is not None and engine.kind == "openai":
        fail(
            f"{where(run.engine_config)}: --self-train fine-tunes models and serves them itself; it needs the "
            'in-process vLLM engine (kind = "vllm"), not an OpenAI-compatible server'
        )
    loop = SelfTrainConfig(iterations=iterations, max_steps=train_steps, work=str(work) if work else None)
    options = dict(
        docs=str(docs), seeds=str(seeds) if seeds else None, rounds=rounds, min_score=min_score,
        text_field=text_field, max_segments=max_segments, chunk_size=chunk_size,
        self_train=loop if self_train else None,
    )  # fmt: skip
    more = [(backward, where(backward_engine_config))] if backward is not None else []
    report = print_self_training if self_train else print_backtranslation_funnel
    _run("backtranslation", run, options, more, report=report, backward_engine=backward)


@app.command("preferences")
@run_options(seed_help="Run seed (the responses' and grades' sampling).")
def generate_preferences(
    source: Annotated[str, source_option("answer")],
    samples: Annotated[int, typer.Option("--samples", "-k", min=2, help="Responses per instruction (K).")] = 4,
    judge_samples: Annotated[
        int | None,
        typer.Option(
            "--judge-samples", min=1, help="Grades per response, averaged (default: the profile's; paper: 3)."
        ),
    ] = None,
    min_margin: Annotated[
        float,
        typer.Option(
            "--min-margin", min=0, max=4, help="Chosen must beat rejected by at least this; a tie is never a pair."
        ),
    ] = 0.0,
    position_check: Annotated[
        bool,
        typer.Option(
            "--position-check/--no-position-check",
            help="Also compare chosen and rejected side by side in both orders; a verdict that flips is a reject.",
        ),
    ] = False,
    system_prompt: Annotated[
        str, typer.Option("--system-prompt", help="A system message for the responses (default: none).")
    ] = "",
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Use only the first N instructions.")] = None,
    chunk_size: Annotated[int, typer.Option(min=1, help="Instructions per committed batch.")] = 64,
    response_engine_configs: Annotated[
        list[Path] | None,
        typer.Option(
            "--response-engine-config",
            help="Another engine that writes responses (repeatable); responses alternate between the engines.",
        ),
    ] = None,
    *,
    run: RunOptions,
) -> None:
    """Preference pairs for DPO (Self-Rewarding recipe): K responses per instruction, each graded
    by the judge on a rubric; the best against the worst, ties and small margins rejected.

    Re-running the same command resumes the run.
    """
    extra = [(load_engine(p), where(p)) for p in response_engine_configs or []]
    options = dict(
        source=source, samples=samples, min_margin=min_margin, position_check=position_check,
        system_prompt=system_prompt, limit=limit, chunk_size=chunk_size, response_engines=[e for e, _ in extra],
        judge_samples=judge_samples,
    )  # fmt: skip
    _run("preferences", run, options, extra, report=print_pairs)


def print_pairs(summary: dict[str, Any]) -> None:
    """How many source instructions became pairs (before the curation chain)."""
    pairs = summary.get("pairs", {})
    console.print(
        f"preference pairs: {pairs.get('paired', 0)} of {pairs.get('instructions', 0)} instructions paired "
        "(before curation; the rejects say why the others were not)"
    )
