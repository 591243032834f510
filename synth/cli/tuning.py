"""Options `synth train`, `synth evaluate` and `synth compare` share: the fine-tuning settings,
and the benchmarks the tuned models are scored on (one `BenchmarkOptions` parameter, see
`benchmark_options`); and the checks of their values that run before any model loads."""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass, fields
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


def benchmark_options(command: _Command) -> _Command:
    """Let `command` take the benchmark options as one parameter `benchmarks: BenchmarkOptions`: the
    command line shows them, option by option, where that parameter stands."""
    hints = typing.get_type_hints(BenchmarkOptions, include_extras=True)
    group = [
        inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=hints[f.name], default=f.default)
        for f in fields(BenchmarkOptions)
    ]
    params: list[inspect.Parameter] = []
    for p in inspect.signature(command, eval_str=True).parameters.values():
        params += group if p.name == "benchmarks" else [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)]

    @functools.wraps(command)
    def with_options(**given: Any) -> None:
        benchmarks = BenchmarkOptions(**{f.name: given.pop(f.name) for f in fields(BenchmarkOptions)})
        command(**given, benchmarks=benchmarks)

    with_options.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return cast(_Command, with_options)
