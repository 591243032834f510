"""`synth generate`: run one generator (Self-Instruct, Evol-Instruct, backtranslation, Magpie, preference
pairs) into a dataset.

Every command is built from its generator's config (`synth.cli.derived`) and ends in `_run`: it
builds the config from the options, has the registry check its seeds or sources (a bad file fails
before any model loads), checks everything else a run needs, then calls the flow. The `Custom`
entries here give three generators options of their own (engines to load, the self-training loop)
and their own summary.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from synth.cli.checks import check_prefect_api, preflight, writing
from synth.cli.derived import Custom, build_config, generator_group
from synth.cli.errors import fail, log_tracebacks_off
from synth.cli.options import RunOptions, load_curation, load_engine, path_option, where
from synth.cli.output import (
    console,
    live_progress,
    print_backtranslation_funnel,
    print_evol_rounds,
    print_profile,
    print_self_training,
    print_summary,
)
from synth.registry import GENERATORS

if TYPE_CHECKING:
    from synth.flows.preferences import PreferencesSummary
    from synth.flows.reflection import ReflectionSummary


def _run(
    generator: str,
    run: RunOptions,
    options: dict[str, Any],
    more_engines: list[tuple[Any, str]] | None = None,
    report: Callable[[Any], None] | None = None,  # takes the generator's own summary type
    **flow_args: Any,
) -> None:
    """Build the generator's config (its class from the registry) from the command's `options` and
    the shared ones (an option left None takes the config's default, or its profile's), check
    everything the run needs, run the generator's flow into the run's dataset with its engine
    (`more_engines` are checked too), then print its summary (after the generator's own `report`)
    and what its profile changed."""
    from synth.schemas import DatasetConfig

    config = build_config(GENERATORS[generator].config, options | run.config_fields())
    out, curation, shard_rows, wait = run.out, run.curation, run.shard_rows, run.wait
    engines = [(load_engine(run.engine_config), where(run.engine_config)), *(more_engines or [])]

    curation_config = load_curation(curation)
    # The generator's own check loads its flow's modules, Prefect among them: every other check first.
    preflight(out, engines, curation_config, where(curation), flow=False)
    GENERATORS[generator].check_inputs(config, out)  # a bad seed file or source fails before any model loads
    check_prefect_api()

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


def evolve(run: RunOptions, options: dict[str, Any]) -> None:
    """Evol-Instruct (Xu et al. 2023): rewrite instructions into harder (in-depth) or rarer
    (in-breadth) ones over several rounds, eliminating failed evolutions with a reason.

    Re-running the same command resumes the run.
    """
    _run("evol_instruct", run, options, report=print_evol_rounds)


def backtranslate(
    run: RunOptions,
    options: dict[str, Any],
    backward_engine_config: Annotated[
        Path | None,
        path_option("--backward-engine-config", help="A separate engine for the backward (instruction-writing) step."),
    ] = None,
    self_train: Annotated[
        bool,
        typer.Option(
            "--self-train",
            help="The paper's self-training loop: fine-tune a backward model and graders on the seed pairs "
            "(LoRA on the engine's model; needs the in-process vLLM engine); its settings are the options "
            "after this one.",
        ),
    ] = False,
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
    loop = {name: value for name, value in options["self_train"].items() if value is not None}
    if loop and not self_train:
        fail(f"--{next(iter(loop)).replace('_', '-')} is a setting of the self-training loop: add --self-train")
    more = [(backward, where(backward_engine_config))] if backward is not None else []
    report = print_self_training if self_train else print_backtranslation_funnel
    options = {**options, "self_train": build_config(SelfTrainConfig, loop) if self_train else None}
    _run("backtranslation", run, options, more, report=report, backward_engine=backward)


def pair_preferences(
    run: RunOptions,
    options: dict[str, Any],
    response_engine_configs: Annotated[
        list[Path] | None,
        path_option(
            "--response-engine-config",
            help="Another engine that writes responses (repeatable); responses alternate between the engines.",
        ),
    ] = None,
) -> None:
    """Preference pairs for DPO (Self-Rewarding recipe): K responses per instruction, each graded
    by the judge on a rubric; the best against the worst, ties and small margins rejected.

    Re-running the same command resumes the run.
    """
    extra = [(load_engine(p), where(p)) for p in response_engine_configs or []]
    options = {**options, "response_engines": [e for e, _ in extra]}
    _run("preferences", run, options, extra, report=print_pairs)


def recycle(
    run: RunOptions,
    options: dict[str, Any],
    source: Annotated[
        str,
        typer.Argument(
            metavar="SOURCE",
            help="Pairs to recycle: a dataset directory, or a JSONL, JSON array (Alpaca format) or Parquet file.",
        ),
    ],
    student_engine_config: Annotated[
        Path | None,
        path_option(
            "--student-engine-config",
            help="The student model that scores the variants (default: the run's engine, the teacher).",
        ),
    ] = None,
) -> None:
    """Recycle pairs by reflection (Reflection-tuning, Li et al. 2023; Selective Reflection-tuning,
    2024): a teacher (the run's engine) rewrites each pair's instruction and response, and a student
    keeps the rewrites it can learn from, by IFD and reversed IFD. Every variant not kept is a reject
    with its scores and the reason.

    Also `synth recycle SOURCE --out D`. Re-running the same command resumes the run.
    """
    student = load_engine(student_engine_config) if student_engine_config else None
    extra = [(student, where(student_engine_config))] if student is not None else []
    options = {**options, "source": source, "student_engine": student}
    _run("reflection", run, options, extra, report=print_recycled)


def print_recycled(summary: ReflectionSummary) -> None:
    """How many source pairs were recycled, by variant (before the curation chain)."""
    counts = summary["recycled"]
    written = ", ".join(f"{n} {k.removeprefix('written ')}" for k, n in sorted(counts.items()) if k != "pairs")
    console.print(
        f"recycled: {counts.get('pairs', 0)} source pairs read; written: {written or 'none'} "
        "(before curation; the rejects say why the others were not)"
    )


def codeclm(
    run: RunOptions,
    options: dict[str, Any],
    target_engine_config: Annotated[
        Path | None,
        path_option(
            "--target-engine-config",
            help="The target model whose answers the strong model's are compared with (default: the run's engine).",
        ),
    ] = None,
) -> None:
    """CodecLM (Wang et al. 2024): the strong model (the run's engine) encodes seed instructions into
    metadata, decodes it into instructions, makes them harder with Self-Rubrics, and keeps the pairs
    whose strong answer beats the target model's by more than the threshold (Contrastive Filtering).

    Re-running the same command resumes the run.
    """
    target = load_engine(target_engine_config) if target_engine_config else None
    extra = [(target, where(target_engine_config))] if target is not None else []
    _run("codeclm", run, {**options, "target_engine": target}, extra)


# Every registry entry is a command, built from its config's fields when asked for
# (`synth.cli.derived`); these generators name theirs and finish the run themselves (engines to
# load, options of their own, what to print).
CUSTOM: dict[str, Custom] = {
    "evol_instruct": Custom("evol", evolve),
    "backtranslation": Custom("backtranslate", backtranslate, nested=("self_train",)),
    "preferences": Custom("preferences", pair_preferences),
    "reflection": Custom("recycle", recycle),
    "codeclm": Custom("codeclm", codeclm),
}
app = typer.Typer(
    cls=generator_group(_run, CUSTOM),
    help="Run one generator into a dataset directory.",
    no_args_is_help=True,
)


def print_pairs(summary: PreferencesSummary) -> None:
    """How many source instructions became pairs (before the curation chain)."""
    pairs = summary["pairs"]
    console.print(
        f"preference pairs: {pairs.get('paired', 0)} of {pairs.get('instructions', 0)} instructions paired "
        "(before curation; the rejects say why the others were not)"
    )
