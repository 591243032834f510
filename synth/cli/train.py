"""`synth train` and `synth evaluate`: fine-tune a model on generated data, and measure a dataset by
the loss of a model tuned on it.

Both read their data and check the base model and output before any model loads or a Prefect
server starts; a model folder that is already up to date is reported without starting either.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from synth.cli.checks import check_prefect_api
from synth.cli.errors import log_tracebacks_off, state
from synth.cli.options import path_argument, path_option
from synth.cli.output import console
from synth.cli.tuning import (
    BaseOpt,
    BatchOpt,
    DeviceOpt,
    LogEveryOpt,
    LoraAlphaOpt,
    LoraROpt,
    LrOpt,
    MaxLengthOpt,
    SeedOpt,
    ThreadsOpt,
    checked,
    choice,
    option_groups,
)
from synth.flows import api

if TYPE_CHECKING:
    from synth.training import TrainingReport


def _targets(value: str) -> list[str] | str:
    if value.strip() == "all-linear":
        return "all-linear"
    return [t.strip() for t in value.split(",") if t.strip()]


@dataclass(frozen=True)
class TrainingOptions:
    """The settings of `synth train`, one option each, named as the `TrainingConfig` fields they set
    (in the order the command line shows them)."""

    direction: Annotated[
        str,
        typer.Option(
            "--direction",
            help="forward: instruction (+input) -> output. backward: output -> instruction (Humpback's backward model).",
        ),
    ] = "forward"
    base: BaseOpt = None
    epochs: Annotated[float, typer.Option("--epochs", min=0, help="Passes over the data.")] = 3.0
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", min=1, help="Stop after N steps (overrides --epochs).")
    ] = None
    learning_rate: LrOpt = 2e-4
    lora_r: LoraROpt = 16
    lora_alpha: LoraAlphaOpt = 32
    lora_dropout: Annotated[float, typer.Option("--lora-dropout", min=0, max=0.99, help="LoRA dropout.")] = 0.05
    lora_targets: Annotated[
        str, typer.Option("--lora-targets", help="Modules to adapt, comma-separated, or all-linear.")
    ] = "q_proj,k_proj,v_proj,o_proj"
    batch_size: BatchOpt = 8
    grad_accum: Annotated[int, typer.Option("--grad-accum", min=1, help="Steps of gradient accumulation.")] = 1
    max_length: MaxLengthOpt = 1024
    seed: SeedOpt = 0
    eval_share: Annotated[
        float, typer.Option("--eval-share", min=0, max=0.99, help="Share of the examples held out for an eval loss.")
    ] = 0.0
    gradient_checkpointing: Annotated[
        bool, typer.Option("--gradient-checkpointing", help="Trade compute for memory (large models on a GPU).")
    ] = False
    save_dtype: Annotated[
        str,
        typer.Option("--save-dtype", help="auto (the training dtype: float32 on a CPU), float32, bfloat16 or float16."),
    ] = "auto"
    device: DeviceOpt = "auto"
    threads: ThreadsOpt = None
    log_every: LogEveryOpt = 10

    def check(self) -> None:
        choice(self.direction, "--direction", ("forward", "backward"))
        choice(self.save_dtype, "--save-dtype", ("auto", "float32", "bfloat16", "float16"))
        choice(self.device, "--device", ("auto", "cpu", "cuda"))

    def config_fields(self) -> dict[str, Any]:
        """What a `TrainingConfig` takes from these: each as it is, the modules to adapt as a list."""
        return {**asdict(self), "lora_targets": _targets(self.lora_targets)}


@option_groups
def train_model(
    data: Annotated[
        Path,
        path_argument(
            "DATA", help="A dataset directory (its kept records) or a JSONL/Parquet file of instruction/input/output."
        ),
    ],
    out: Annotated[Path, path_option("--out", help="Model folder to write (a merged model vLLM can load).")],
    *,
    settings: TrainingOptions,
) -> None:
    """Fine-tune a model with LoRA (TRL's SFT trainer) and save it merged, with training.json.

    Loss on the completion only, in the base's chat template. An up-to-date folder is kept; a killed run leaves none.
    """
    api.prepare_process()
    from synth.training import TrainingConfig
    from synth.training.data import load_examples
    from synth.training.model import check_out, resolve_base

    settings.check()
    config = TrainingConfig(out=out, **settings.config_fields())
    examples = checked(load_examples, data)
    checked(resolve_base, settings.base)
    checked(check_out, out)
    from synth.training.sft import up_to_date  # torch and friends: only once the input is known to be good

    if checked(up_to_date, config, examples):
        console.print(Text(f"{out}: up to date (same base, data and settings); not trained again"), soft_wrap=True)
        _print_training(out)
        return
    check_prefect_api()
    log_tracebacks_off()
    state.writing_to = out
    from synth.flows.training import train_flow

    checked(train_flow, config, str(data))
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
