"""`synth evaluate`: fine-tune the base on a dataset and score both models (held-out loss,
benchmarks)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from synth.cli.checks import check_prefect_api
from synth.cli.errors import fail, log_tracebacks_off, state
from synth.cli.options import path_argument, path_option
from synth.cli.output import console, err
from synth.cli.tuning import (
    BenchmarkOptions,
    LogEveryOpt,
    LoraAlphaOpt,
    LoraROpt,
    TuningOptions,
    checked,
    option_groups,
)
from synth.flows import api


@option_groups
def evaluate(
    dataset: Annotated[Path, path_argument("DATASET", help="Dataset directory to evaluate (its kept records).")],
    reference: Annotated[
        Path | None,
        path_option(
            "--reference",
            help="Held-out reference pairs: a JSONL or Parquet file of instruction/input/output (or a dataset). "
            "Optional with --benchmark (then no loss is taken).",
        ),
    ] = None,
    *,
    tuning: TuningOptions,
    lora_r: LoraROpt = 16,
    lora_alpha: LoraAlphaOpt = 32,
    keep_model: Annotated[
        Path | None, path_option("--keep-model", help="Keep the tuned model in this folder (default: removed).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Evaluate again even when nothing changed.")] = False,
    log_every: LogEveryOpt = 10,
    benchmarks: BenchmarkOptions,
) -> None:
    """Proxy evaluation: fine-tune the base on the dataset with a fixed budget and seed, then compare
    the base's and the tuned model's loss per token on the reference outputs (and, with --benchmark,
    their scores on HumanEval or an instruction-following benchmark; answers are kept as they are
    made, so an evaluation killed halfway does not make them again).

    Writes evaluation.json beside the manifest. Compare datasets on the same reference, base and budget.
    """
    api.prepare_process()
    from synth.shards.layout import MANIFEST, is_dataset, read_manifest
    from synth.training import EvaluationConfig
    from synth.training.data import load_examples
    from synth.training.model import check_out, resolve_base

    tuning.check()
    benchmarks.check()
    if not is_dataset(dataset):
        fail(f"{dataset}: no {MANIFEST}; not a dataset directory")
    read_manifest(dataset)
    config = EvaluationConfig(
        **tuning.config_fields(),
        seeds=tuning.seeds,
        lora_r=lora_r,
        lora_alpha=lora_alpha,
        model_dir=keep_model,
        log_every=log_every,
        **benchmarks.config_fields(),
    )
    if reference is None and not benchmarks.benchmark:
        fail("nothing to measure: give --reference (held-out pairs) or --benchmark")
    checked(load_examples, dataset)
    if reference is not None:
        checked(load_examples, reference)
    checked(resolve_base, tuning.base)
    if keep_model is not None:
        checked(check_out, keep_model)
    check_prefect_api()
    log_tracebacks_off()
    state.writing_to = dataset
    from synth.flows.training import evaluate_flow

    result = checked(evaluate_flow, str(dataset), str(reference) if reference is not None else None, config, force)
    _print_evaluation(result)


def _print_instruction_following(name: str, scores: dict[str, Any], difference: dict[str, Any] | None) -> None:
    base = scores["base"]
    table = Table(title=f"{name}: instruction following ({base['prompts']} prompts, greedy)", title_justify="left")
    for column in ("model", "strict prompt", "strict instruction", "loose prompt", "loose instruction"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for which in ("base", "tuned"):
        s = scores[which]
        table.add_row(
            Text(s["model"]),
            *(f"{s[k]:.3f}" for k in ("strict_prompt", "strict_instruction", "loose_prompt", "loose_instruction")),
        )
    console.print(table)
    _print_difference(difference)
    for reason, n in sorted(base["left_out"].items()):
        err.print(Text(f"{name}: {n} prompts left out: {reason}", style="yellow"), soft_wrap=True)


def _print_evaluation(result: dict[str, Any]) -> None:
    if result["reference_pairs"]:
        _print_loss(result)
    else:
        console.print(
            Text(
                f"{result['train_steps']} steps on {result['examples']} records; no reference pairs, so no loss; "
                f"written to {Path(result['dataset']) / 'evaluation.json'}"
            ),
            soft_wrap=True,
        )
    for name, scores in result.get("benchmarks", {}).items():
        if "strict_prompt" in scores["base"]:
            _print_instruction_following(name, scores, result.get("differences", {}).get(name))
        else:
            _print_pass_at_1(name, scores, result.get("differences", {}).get(name))
    if result["overlap"]:
        err.print(
            Text(
                f"{result['overlap']} records whose instruction is a reference prompt were left out of training "
                "(the reference stays held out)",
                style="yellow",
            ),
            soft_wrap=True,
        )


def _print_loss(result: dict[str, Any]) -> None:
    table = Table(title=f"Proxy loss on {result['reference_pairs']} reference pairs", title_justify="left")
    for column in ("model", "loss per token", "perplexity"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name in ("base", "tuned"):
        score = result[name]
        table.add_row(Text(score["model"]), f"{score['loss']:.4f}", f"{score['perplexity']:.2f}")
    console.print(table)
    if result.get("seed_losses"):
        losses = ", ".join(f"{x:.4f}" for x in result["seed_losses"])
        console.print(
            Text(
                f"tuned loss: the mean of {result['seeds']} fine-tuning seeds ({losses}; spread {result['seed_spread']:.4f})"
            ),
            soft_wrap=True,
        )
    console.print(
        Text(
            f"improvement {result['improvement']:+.4f} ({result['relative_improvement']:+.1%}) after "
            f"{result['train_steps']} steps on {result['examples']} records; "
            f"written to {Path(result['dataset']) / 'evaluation.json'}"
        ),
        soft_wrap=True,
    )


def _print_difference(difference: dict[str, Any] | None) -> None:
    """Tuned minus base on a benchmark's headline metric, its interval, and each seed's metric."""
    if not difference:
        return
    by_seed = difference.get("seed_values") or []
    seeds = f"; the tuned model's by seed: {', '.join(f'{v:.3f}' for v in by_seed)}" if by_seed else ""
    console.print(
        Text(
            f"tuned minus base, {difference['metric']}: {difference['difference']:+.3f} "
            f"(95% paired bootstrap interval {difference['low']:+.3f} to {difference['high']:+.3f}){seeds}"
        ),
        soft_wrap=True,
    )


def _print_pass_at_1(name: str, scores: dict[str, Any], difference: dict[str, Any] | None) -> None:
    table = Table(title=f"{name}: pass@1 (greedy)", title_justify="left")
    for column in ("model", "passed", "pass@1", "failures"):
        table.add_column(column, justify="left" if column in ("model", "failures") else "right")
    for which in ("base", "tuned"):
        score = scores[which]
        failures = ", ".join(f"{kind} {n}" for kind, n in sorted(score["failures"].items()))
        table.add_row(
            Text(score["model"]), f"{score['passed']}/{score['problems']}", f"{score['pass_at_1']:.3f}", failures
        )
    console.print(table)
    _print_difference(difference)
