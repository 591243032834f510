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
from synth.cli.train import (
    BaseOpt,
    BatchOpt,
    DeviceOpt,
    LogEveryOpt,
    LoraAlphaOpt,
    LoraROpt,
    LrOpt,
    SeedOpt,
    ThreadsOpt,
    _checked,
    _choice,
)
from synth.flows import api

# The fine-tuning budget and the benchmark settings `synth compare` shares.
EpochsOpt = Annotated[
    float, typer.Option("--epochs", min=0.01, help="Training budget: passes over the records trained on.")
]
MaxStepsOpt = Annotated[
    int | None,
    typer.Option("--max-steps", min=1, help="Training budget in steps of --batch-size records (overrides --epochs)."),
]
SeedsOpt = Annotated[
    int,
    typer.Option(
        "--seeds",
        min=1,
        help="Fine-tune this many times (seeds --seed onward, the same records): means, with the spread.",
    ),
]
BenchmarkLimitOpt = Annotated[
    int | None,
    typer.Option(
        "--benchmark-limit", "--limit", min=1, help="Score each benchmark's first N problems or prompts only."
    ),
]
BenchmarkMaxTokensOpt = Annotated[
    int, typer.Option("--benchmark-max-tokens", min=1, help="Tokens each model may write per benchmark answer.")
]
BenchmarkOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--benchmark",
        help="Also score the models on a benchmark: humaneval (pass@1, greedy; programs run in the "
        "sandbox), ifbench (instruction following checked by programs: strict and loose accuracy) or an "
        "IFEval-format JSONL FILE of prompts with instruction ids and arguments. Repeatable.",
    ),
]
IsolationOpt = Annotated[
    str, typer.Option("--isolation", help="How benchmark programs run: bubblewrap, or none-unsafe (no isolation).")
]
BenchmarkChatOpt = Annotated[
    bool,
    typer.Option(
        "--benchmark-chat",
        help="Ask each HumanEval problem in the model's chat template and take the code block of the reply "
        "(chat models), instead of continuing the prompt.",
    ),
]
BenchmarkEngineOpt = Annotated[
    str,
    typer.Option(
        "--benchmark-engine",
        help="What makes the benchmark answers: vllm (each model loaded in vLLM in turn, closed before the "
        "next one trains) or transformers (generate on the model loaded for the loss: slow, needs no vLLM).",
    ),
]


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
    base: BaseOpt = None,
    epochs: EpochsOpt = 1.0,
    max_steps: MaxStepsOpt = None,
    lr: LrOpt = 2e-4,
    lora_r: LoraROpt = 16,
    lora_alpha: LoraAlphaOpt = 32,
    batch_size: BatchOpt = 8,
    max_length: Annotated[
        int, typer.Option("--max-length", min=16, help="Tokens per example; longer ones are cut.")
    ] = 512,
    seed: SeedOpt = 0,
    seeds: SeedsOpt = 1,
    device: DeviceOpt = "auto",
    keep_model: Annotated[
        Path | None, path_option("--keep-model", help="Keep the tuned model in this folder (default: removed).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Evaluate again even when nothing changed.")] = False,
    threads: ThreadsOpt = None,
    log_every: LogEveryOpt = 10,
    benchmark: BenchmarkOpt = None,
    benchmark_limit: BenchmarkLimitOpt = None,
    benchmark_max_tokens: BenchmarkMaxTokensOpt = 512,
    benchmark_engine: BenchmarkEngineOpt = "vllm",
    isolation: IsolationOpt = "bubblewrap",
    benchmark_chat: BenchmarkChatOpt = False,
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

    _choice(device, "--device", ("auto", "cpu", "cuda"))
    check_benchmarks(benchmark or [], benchmark_engine, isolation)
    if not is_dataset(dataset):
        fail(f"{dataset}: no {MANIFEST}; not a dataset directory")
    read_manifest(dataset)
    config = EvaluationConfig(
        base=base,
        epochs=epochs,
        max_steps=max_steps,
        learning_rate=lr,
        lora_r=lora_r,
        lora_alpha=lora_alpha,
        batch_size=batch_size,
        max_length=max_length,
        seed=seed,
        seeds=seeds,
        device=device,
        threads=threads,
        model_dir=keep_model,
        log_every=log_every,  # type: ignore[arg-type]
        benchmarks=sorted(set(benchmark or [])),  # type: ignore[arg-type]
        benchmark_limit=benchmark_limit,
        benchmark_max_tokens=benchmark_max_tokens,
        benchmark_chat=benchmark_chat,
        benchmark_engine=benchmark_engine,  # type: ignore[arg-type]
        isolation=isolation,  # type: ignore[arg-type]
    )
    if reference is None and not benchmark:
        fail("nothing to measure: give --reference (held-out pairs) or --benchmark")
    _checked(load_examples, dataset)
    if reference is not None:
        _checked(load_examples, reference)
    _checked(resolve_base, base)
    if keep_model is not None:
        _checked(check_out, keep_model)
    check_prefect_api()
    log_tracebacks_off()
    state.writing_to = dataset
    from synth.flows.training import evaluate_flow

    result = _checked(evaluate_flow, str(dataset), str(reference) if reference is not None else None, config, force)
    _print_evaluation(result)


def check_benchmarks(names: list[str], engine: str, isolation: str) -> None:
    """Each --benchmark is humaneval, ifbench or an IFEval-format JSONL file that reads; the
    instruction-following checkers are installed when a benchmark needs them, the sandbox works
    when HumanEval's programs will run, and the answering engine is one we have."""
    _choice(engine, "--benchmark-engine", ("vllm", "transformers"))
    _choice(isolation, "--isolation", ("bubblewrap", "none-unsafe"))
    for name in names:
        if name not in ("humaneval", "ifbench"):
            _check_instruction_file(name)
    if any(name != "humaneval" for name in names):
        from synth.training.ifbench import available

        if problem := available():
            fail(problem)
    if "humaneval" in names:
        from synth.sandbox import Sandbox

        Sandbox(isolation=isolation).available()  # type: ignore[arg-type]


def _check_instruction_file(name: str) -> None:
    from synth.training.ifbench import IFBenchFileError, read_prompts

    if not name.endswith(".jsonl"):
        fail(f"--benchmark: {name!r} is not humaneval, ifbench or a .jsonl file in the IFEval format")
    try:
        read_prompts(name)
    except IFBenchFileError as e:
        fail(f"--benchmark: {e}")


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
