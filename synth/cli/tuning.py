"""Options `synth train`, `synth evaluate` and `synth compare` share: the fine-tuning settings
(`TuningOptions`, for evaluate and compare) and the benchmarks the tuned models are scored on
(`BenchmarkOptions`), each group one parameter of the command (see `option_groups`); and the
checks of their values that run before any model loads."""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass, fields, is_dataclass
from typing import Annotated, Any, TypeVar, cast

import typer

from synth.cli.errors import fail

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
MaxLengthOpt = Annotated[int, typer.Option("--max-length", min=16, help="Tokens per example; longer ones are cut.")]
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

# The fine-tuning budget of `synth evaluate` and `synth compare`.
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


@dataclass(frozen=True)
class TuningOptions:
    """The fine-tuning settings of `synth evaluate` and `synth compare`, declared once: each field is
    an option, in the order the command line shows them."""

    base: BaseOpt = None
    epochs: EpochsOpt = 1.0
    max_steps: MaxStepsOpt = None
    lr: LrOpt = 2e-4
    batch_size: BatchOpt = 8
    max_length: MaxLengthOpt = 512
    seed: SeedOpt = 0
    seeds: SeedsOpt = 1
    device: DeviceOpt = "auto"
    threads: ThreadsOpt = None

    def config_fields(self) -> dict[str, Any]:
        """What an `EvaluationConfig` takes from these (`seeds` apart: a comparison takes it as an
        argument of its own)."""
        names = ("base", "epochs", "max_steps", "batch_size", "max_length", "seed", "device", "threads")
        return {"learning_rate": self.lr, **{name: getattr(self, name) for name in names}}

    def check(self) -> None:
        choice(self.device, "--device", ("auto", "cpu", "cuda"))


def choice(value: str, flag: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        fail(f"{flag} {value!r}: choose one of {', '.join(choices)}")


def checked(check: Any, *args: Any) -> Any:
    """Run a check of `synth.training`; what it rejects ends as one line with exit code 2."""
    from synth.training import TrainingDataError, TrainingSetupError

    try:
        return check(*args)
    except (TrainingDataError, TrainingSetupError) as e:
        fail(str(e))


@dataclass(frozen=True)
class BenchmarkOptions:
    """The benchmark options of `synth evaluate` and `synth compare`, declared once: each field
    is an option, in the order the command line shows them."""

    benchmark: Annotated[
        list[str] | None,
        typer.Option(
            "--benchmark",
            help="Also score the models on a benchmark: humaneval (pass@1, greedy; programs run in the "
            "sandbox), ifbench (instruction following checked by programs: strict and loose accuracy) or an "
            "IFEval-format JSONL FILE of prompts with instruction ids and arguments. Repeatable.",
        ),
    ] = None
    benchmark_limit: Annotated[
        int | None,
        typer.Option(
            "--benchmark-limit", "--limit", min=1, help="Score each benchmark's first N problems or prompts only."
        ),
    ] = None
    benchmark_max_tokens: Annotated[
        int, typer.Option("--benchmark-max-tokens", min=1, help="Tokens each model may write per benchmark answer.")
    ] = 512
    benchmark_engine: Annotated[
        str,
        typer.Option(
            "--benchmark-engine",
            help="What makes the benchmark answers: vllm (each model loaded in vLLM in turn, closed before the "
            "next one trains) or transformers (generate on the model loaded for the loss: slow, needs no vLLM).",
        ),
    ] = "vllm"
    isolation: Annotated[
        str, typer.Option("--isolation", help="How benchmark programs run: bubblewrap, or none-unsafe (no isolation).")
    ] = "bubblewrap"
    benchmark_chat: Annotated[
        bool,
        typer.Option(
            "--benchmark-chat",
            help="Ask each HumanEval problem in the model's chat template and take the code block of the reply "
            "(chat models), instead of continuing the prompt.",
        ),
    ] = False

    def config_fields(self) -> dict[str, Any]:
        """What an `EvaluationConfig` takes from these (each benchmark once, sorted)."""
        return {
            "benchmarks": sorted(set(self.benchmark or [])),
            "benchmark_limit": self.benchmark_limit,
            "benchmark_max_tokens": self.benchmark_max_tokens,
            "benchmark_chat": self.benchmark_chat,
            "benchmark_engine": self.benchmark_engine,
            "isolation": self.isolation,
        }

    def check(self) -> None:
        """Each --benchmark is humaneval, ifbench or an IFEval-format JSONL file that reads; the
        instruction-following checkers are installed when a benchmark needs them, the sandbox works
        when HumanEval's programs will run, and the answering engine is one we have."""
        choice(self.benchmark_engine, "--benchmark-engine", ("vllm", "transformers"))
        choice(self.isolation, "--isolation", ("bubblewrap", "none-unsafe"))
        names = self.benchmark or []
        for name in names:
            if name not in ("humaneval", "ifbench"):
                _check_instruction_file(name)
        if any(name != "humaneval" for name in names):
            from synth.training.ifbench import available

            if problem := available():
                fail(problem)
        if "humaneval" in names:
            from synth.sandbox import Sandbox

            Sandbox(isolation=self.isolation).available()  # type: ignore[arg-type]


def _check_instruction_file(name: str) -> None:
    from synth.training.ifbench import IFBenchFileError, read_prompts

    if not name.endswith(".jsonl"):
        fail(f"--benchmark: {name!r} is not humaneval, ifbench or a .jsonl file in the IFEval format")
    try:
        read_prompts(name)
    except IFBenchFileError as e:
        fail(f"--benchmark: {e}")


_Command = TypeVar("_Command", bound=Callable[..., None])


def option_groups(command: _Command) -> _Command:
    """Let `command` take a group of options as one parameter typed with a frozen dataclass whose
    fields are the options (`TuningOptions`, `BenchmarkOptions`): the command line shows them,
    option by option, where that parameter stands, and the command gets the dataclass."""
    groups: dict[str, Any] = {}
    params: list[inspect.Parameter] = []
    for p in inspect.signature(command, eval_str=True).parameters.values():
        if not is_dataclass(p.annotation):
            params.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY))
            continue
        groups[p.name] = group = p.annotation
        hints = typing.get_type_hints(group, include_extras=True)
        params += [
            inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=hints[f.name], default=f.default)
            for f in fields(group)
        ]
    assert len({p.name for p in params}) == len(params), "an option of a group has the name of another option"

    @functools.wraps(command)
    def with_options(**given: Any) -> None:
        for name, group in groups.items():
            given[name] = group(**{f.name: given.pop(f.name) for f in fields(group)})
        command(**given)

    with_options.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return cast(_Command, with_options)
