"""`synth train` and `synth evaluate`: fine-tune a model on generated data, and measure a dataset by
the loss of a model tuned on it.

Both read their data and check the base model and output before any model loads or a Prefect
server starts; a model folder that is already up to date is reported without starting either.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from synth.cli.checks import check_prefect_api
from synth.cli.errors import fail, log_tracebacks_off, state
from synth.cli.options import path_argument, path_option
from synth.cli.output import console, err
from synth.flows import api

if TYPE_CHECKING:
    from synth.training import TrainingReport

BaseOpt = Annotated[
    str | None,
    typer.Option(
        "--base",
        help="Base model: a local model folder (or a name already in the local Hugging Face cache; nothing "
        "is downloaded). Default: the embedded model.",
    ),
]
LrOpt = Annotated[float, typer.Option("--lr", min=0, help="Peak learning rate (linear decay).")]
LoraROpt = Annotated[int, typer.Option("--lora-r", min=1, help="LoRA rank.")]
LoraAlphaOpt = Annotated[int, typer.Option("--lora-alpha", min=1, help="LoRA alpha (scale = alpha / rank).")]
BatchOpt = Annotated[int, typer.Option("--batch-size", min=1, help="Examples per step (per device).")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the data order, the LoRA initialization and dropout.")]
DeviceOpt = Annotated[
    str, typer.Option("--device", help="auto (CUDA in bfloat16 when visible, else the CPU in float32), cpu or cuda.")
]
LogEveryOpt = Annotated[int, typer.Option("--log-every", min=1, help="Say the loss and speed every N steps.")]
ThreadsOpt = Annotated[
    int | None,
    typer.Option(
        "--threads",
        min=1,
        help="CPU threads for torch (default: all cores; 1 is faster on a CPU other jobs keep busy).",
    ),
]


def _choice(value: str, flag: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        fail(f"{flag} {value!r}: choose one of {', '.join(choices)}")


def _checked(check: Any, *args: Any) -> Any:
    """Run a check of `synth.training`; what it rejects ends as one line with exit code 2."""
    from synth.training import TrainingDataError, TrainingSetupError

    try:
        return check(*args)
    except (TrainingDataError, TrainingSetupError) as e:
        fail(str(e))


def _targets(value: str) -> list[str] | str:
    if value.strip() == "all-linear":
        return "all-linear"
    return [t.strip() for t in value.split(",") if t.strip()]


def train_model(
    data: Annotated[
        Path,
        path_argument(
            "DATA", help="A dataset directory (its kept records) or a JSONL/Parquet file of instruction/input/output."
        ),
    ],
    out: Annotated[Path, path_option("--out", help="Model folder to write (a merged model vLLM can load).")],
    direction: Annotated[
        str,
        typer.Option(
            "--direction",
            help="forward: instruction (+input) -> output. backward: output -> instruction (Humpback's backward model).",
        ),
    ] = "forward",
    base: BaseOpt = None,
    epochs: Annotated[float, typer.Option("--epochs", min=0, help="Passes over the data.")] = 3.0,
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", min=1, help="Stop after N steps (overrides --epochs).")
    ] = None,
    lr: LrOpt = 2e-4,
    lora_r: LoraROpt = 16,
    lora_alpha: LoraAlphaOpt = 32,
    lora_dropout: Annotated[float, typer.Option("--lora-dropout", min=0, max=0.99, help="LoRA dropout.")] = 0.05,
    lora_targets: Annotated[
        str, typer.Option("--lora-targets", help="Modules to adapt, comma-separated, or all-linear.")
    ] = "q_proj,k_proj,v_proj,o_proj",
    batch_size: BatchOpt = 8,
    grad_accum: Annotated[int, typer.Option("--grad-accum", min=1, help="Steps of gradient accumulation.")] = 1,
    max_length: Annotated[
        int, typer.Option("--max-length", min=16, help="Tokens per example; longer ones are cut.")
    ] = 1024,
    seed: SeedOpt = 0,
    eval_share: Annotated[
        float, typer.Option("--eval-share", min=0, max=0.99, help="Share of the examples held out for an eval loss.")
    ] = 0.0,
    gradient_checkpointing: Annotated[
        bool, typer.Option("--gradient-checkpointing", help="Trade compute for memory (large models on a GPU).")
    ] = False,
    save_dtype: Annotated[
        str,
        typer.Option("--save-dtype", help="auto (the training dtype: float32 on a CPU), float32, bfloat16 or float16."),
    ] = "auto",
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    log_every: LogEveryOpt = 10,
) -> None:
    """Fine-tune a model with LoRA (TRL's SFT trainer) and save it merged, with training.json.

    Loss on the completion only, in the base's chat template. An up-to-date folder is kept; a killed run leaves none.
    """
    api.prepare_process()
    from synth.training import TrainingConfig
    from synth.training.data import load_examples
    from synth.training.model import check_out, resolve_base

    _choice(direction, "--direction", ("forward", "backward"))
    _choice(save_dtype, "--save-dtype", ("auto", "float32", "bfloat16", "float16"))
    _choice(device, "--device", ("auto", "cpu", "cuda"))
    config = TrainingConfig(
        out=out,
        base=base,
        direction=direction,
        epochs=epochs,
        max_steps=max_steps,
        learning_rate=lr,  # type: ignore[arg-type]
        lora_r=lora_r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        lora_targets=_targets(lora_targets),
        batch_size=batch_size,
        grad_accum=grad_accum,
        max_length=max_length,
        seed=seed,
        eval_share=eval_share,
        gradient_checkpointing=gradient_checkpointing,
        save_dtype=save_dtype,
        device=device,
        threads=threads,
        log_every=log_every,  # type: ignore[arg-type]
    )
    examples = _checked(load_examples, data)
    _checked(resolve_base, base)
    _checked(check_out, out)
    from synth.training.sft import up_to_date  # torch and friends: only once the input is known to be good

    if _checked(up_to_date, config, examples):
        console.print(Text(f"{out}: up to date (same base, data and settings); not trained again"), soft_wrap=True)
        _print_training(out)
        return
    check_prefect_api()
    log_tracebacks_off()
    state.writing_to = out
    from synth.flows.training import train_flow

    _checked(train_flow, config, str(data))
    _print_training(out)


def _print_training(folder: Path) -> None:
    from synth.training import read_report

    report: TrainingReport | None = read_report(folder)
    if report is None:
        return
    rows = [
        ("base", report.base),
        ("direction", report.direction),
        ("examples", f"{report.data.train_examples} trained, {report.data.eval_examples} held out"),
        ("steps", f"{report.steps} ({report.epochs:.2f} epochs)"),
        ("train loss", f"{report.final_train_loss:.4f} (last steps), {report.train_loss:.4f} (mean)"),
        *([("eval loss", f"{report.eval_loss:.4f} per token")] if report.eval_loss is not None else []),
        ("speed", f"{report.tokens_per_second:.0f} tokens/s, {report.seconds:.1f} s ({report.device}, {report.dtype})"),
        ("model", str(folder)),
    ]
    table = Table(title="Training", title_justify="left", show_header=False)
    table.add_column()
    table.add_column(overflow="fold")
    for name, value in rows:
        table.add_row(name, Text(value))
    console.print(table)


def evaluate(
    dataset: Annotated[Path, path_argument("DATASET", help="Dataset directory to evaluate (its kept records).")],
    reference: Annotated[
        Path,
        path_option(
            "--reference",
            help="Held-out reference pairs: a JSONL or Parquet file of instruction/input/output (or a dataset).",
        ),
    ],
    base: BaseOpt = None,
    max_steps: Annotated[
        int, typer.Option("--max-steps", min=1, help="Training budget in steps (of --batch-size examples).")
    ] = 20,
    lr: LrOpt = 2e-4,
    lora_r: LoraROpt = 16,
    lora_alpha: LoraAlphaOpt = 32,
    batch_size: BatchOpt = 8,
    max_length: Annotated[
        int, typer.Option("--max-length", min=16, help="Tokens per example; longer ones are cut.")
    ] = 512,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    keep_model: Annotated[
        Path | None, path_option("--keep-model", help="Keep the tuned model in this folder (default: removed).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Evaluate again even when nothing changed.")] = False,
    threads: ThreadsOpt = None,
    log_every: LogEveryOpt = 10,
    benchmark: Annotated[
        list[str] | None,
        typer.Option(
            "--benchmark",
            help="Also score both models on a benchmark: humaneval (pass@1, greedy; programs run in the "
            "sandbox), ifbench (instruction following checked by programs: strict and loose accuracy) or an "
            "IFEval-format JSONL FILE of prompts with instruction ids and arguments. Repeatable.",
        ),
    ] = None,
    benchmark_limit: Annotated[
        int | None,
        typer.Option("--benchmark-limit", min=1, help="Score each benchmark's first N problems or prompts only."),
    ] = None,
    isolation: Annotated[
        str,
        typer.Option("--isolation", help="How benchmark programs run: bubblewrap, or none-unsafe (no isolation)."),
    ] = "bubblewrap",
    benchmark_chat: Annotated[
        bool,
        typer.Option(
            "--benchmark-chat",
            help="Ask each benchmark problem in the model's chat template and take the code block of the reply "
            "(chat models), instead of continuing the prompt.",
        ),
    ] = False,
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
    _choice(isolation, "--isolation", ("bubblewrap", "none-unsafe"))
    for name in benchmark or []:
        if name not in ("humaneval", "ifbench"):
            _instruction_file(name)
    if "humaneval" in (benchmark or []):
        from synth.sandbox import Sandbox

        Sandbox(isolation=isolation).available()  # type: ignore[arg-type]
    if any(name != "humaneval" for name in benchmark or []):
        from synth.training.ifbench import available

        if problem := available():
            fail(problem)
    if not is_dataset(dataset):
        fail(f"{dataset}: no {MANIFEST}; not a dataset directory")
    read_manifest(dataset)
    config = EvaluationConfig(
        base=base,
        max_steps=max_steps,
        learning_rate=lr,
        lora_r=lora_r,
        lora_alpha=lora_alpha,
        batch_size=batch_size,
        max_length=max_length,
        seed=seed,
        device=device,
        threads=threads,
        model_dir=keep_model,
        log_every=log_every,  # type: ignore[arg-type]
        benchmarks=sorted(set(benchmark or [])),  # type: ignore[arg-type]
        benchmark_limit=benchmark_limit,
        benchmark_chat=benchmark_chat,
        isolation=isolation,  # type: ignore[arg-type]
    )
    _checked(load_examples, dataset)
    _checked(load_examples, reference)
    _checked(resolve_base, base)
    if keep_model is not None:
        _checked(check_out, keep_model)
    check_prefect_api()
    log_tracebacks_off()
    state.writing_to = dataset
    from synth.flows.training import evaluate_flow

    result = _checked(evaluate_flow, str(dataset), str(reference), config, force)
    _print_evaluation(result)


def _instruction_file(name: str) -> None:
    """A --benchmark that is not a name must be an IFEval-format JSONL file that reads."""
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
    if difference:
        console.print(
            Text(
                f"tuned minus base, {difference['metric']}: {difference['difference']:+.3f} "
                f"(95% paired bootstrap interval {difference['low']:+.3f} to {difference['high']:+.3f})"
            ),
            soft_wrap=True,
        )
    for reason, n in sorted(base["left_out"].items()):
        err.print(Text(f"{name}: {n} prompts left out: {reason}", style="yellow"), soft_wrap=True)


def _print_evaluation(result: dict[str, Any]) -> None:
    table = Table(title=f"Proxy loss on {result['reference_pairs']} reference pairs", title_justify="left")
    for column in ("model", "loss per token", "perplexity"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name in ("base", "tuned"):
        score = result[name]
        table.add_row(Text(score["model"]), f"{score['loss']:.4f}", f"{score['perplexity']:.2f}")
    console.print(table)
    console.print(
        Text(
            f"improvement {result['improvement']:+.4f} ({result['relative_improvement']:+.1%}) after "
            f"{result['train_steps']} steps on {result['examples']} records; "
            f"written to {Path(result['dataset']) / 'evaluation.json'}"
        ),
        soft_wrap=True,
    )
    for name, scores in result.get("benchmarks", {}).items():
        if "strict_prompt" in scores["base"]:
            _print_instruction_following(name, scores, result.get("differences", {}).get(name))
            continue
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
    if result["overlap"]:
        err.print(
            Text(
                f"{result['overlap']} records whose instruction is a reference prompt were left out of training "
                "(the reference stays held out)",
                style="yellow",
            ),
            soft_wrap=True,
        )
