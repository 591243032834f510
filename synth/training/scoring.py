"""Benchmark scores of one model, and the difference between two models' scores on the same items.

`score_benchmarks` runs every benchmark an `EvaluationConfig` names (held in `Benchmarking`, with
the tokenizer and system message the models are asked with) through one answering backend;
`difference` takes the headline metric of a tuned model (or of several fine-tuning seeds) minus the
base's, with a paired bootstrap interval over the benchmark's items.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from synth.training.answering import Answerer, Answers
from synth.training.answers import AnswerLog
from synth.training.config import EvaluationConfig
from synth.training.humaneval import BenchmarkScore
from synth.training.ifbench import InstructionScore

Say = Callable[[str], None]


class Difference(BaseModel):
    """Tuned minus base on one metric, with its 95% paired bootstrap interval over the items."""

    model_config = ConfigDict(extra="forbid")

    metric: str
    difference: float
    low: float
    high: float
    seed_values: list[float] = []  # the tuned model's metric for each fine-tuning seed (several seeds only)


def outcomes(score: BenchmarkScore | InstructionScore) -> tuple[str, list[bool]]:
    """A benchmark score's headline metric and, per item, whether the model succeeded: strict
    prompt-level following for instruction following, passing for HumanEval."""
    if isinstance(score, InstructionScore):
        return "strict prompt-level accuracy", [bool(f) for f in score.followed]
    return "pass@1", list(score.passed_each)


def difference(
    base: BenchmarkScore | InstructionScore,
    tuned: BenchmarkScore | InstructionScore | Sequence[BenchmarkScore | InstructionScore],
    seed: int,
) -> Difference | None:
    """The headline metric, tuned minus base, with its interval resampling the items (the same draw
    for both). With several tuned scores (one per fine-tuning seed) each item's outcome is the share
    of seeds that succeeded on it, and each seed's metric is kept. None where the per-item results
    are not there (a result from before they were kept)."""
    from synth.training.bootstrap import paired_interval

    runs = [tuned] if isinstance(tuned, BenchmarkScore | InstructionScore) else list(tuned)
    metric, before = outcomes(base)
    after = [outcomes(r)[1] for r in runs]
    if not before or any(len(a) != len(before) for a in after):
        return None
    ones = [1] * len(before)
    shares = [sum(a[i] for a in after) / len(after) for i in range(len(before))]
    diff, low, high = paired_interval(([float(f) for f in before], ones), (shares, ones), seed)
    by_seed = [round(sum(a) / len(a), 4) for a in after] if len(after) > 1 else []
    return Difference(metric=metric, difference=diff, low=low, high=high, seed_values=by_seed)


@dataclass(frozen=True)
class Benchmarking:
    """How the models of one evaluation are asked the benchmarks: the config naming them (and
    their size, token limit and chat form), the tokenizer rendering their prompts, where progress
    lines go, and the system message instruction-following prompts are asked after ("": none)."""

    config: EvaluationConfig
    tokenizer: Any
    say: Say
    system: str = ""


def score_benchmarks(
    name: str, answers: Answers, setup: Benchmarking, logs: Path | None = None
) -> dict[str, BenchmarkScore | InstructionScore]:
    """Each benchmark `setup` names, answered by `answers` (the model `name`), by its name; with
    `logs` (a path prefix naming the model) the answers are kept as they are made."""

    def log(benchmark: str) -> AnswerLog | None:
        if logs is None:
            return None
        return AnswerLog(logs.with_name(f"{logs.name}-{re.sub(r'[^A-Za-z0-9_.-]', '_', benchmark)}.jsonl"))

    config = setup.config
    model = Answerer(
        name,
        answers,
        setup.tokenizer,
        limit=config.benchmark_limit,
        max_new_tokens=config.benchmark_max_tokens,
        progress=setup.say,
    )
    benchmarks: dict[str, BenchmarkScore | InstructionScore] = {}
    for source in config.instruction_benchmarks():
        from synth.training.ifbench import benchmark_name, instruction_following

        benchmarks[benchmark_name(source)] = instruction_following(
            model, source, system=setup.system, log=log(benchmark_name(source))
        )
    if "humaneval" in config.benchmarks:
        from synth.sandbox import Sandbox
        from synth.training.humaneval import SANDBOX, pass_at_1

        sandbox = Sandbox(SANDBOX, config.isolation)
        benchmarks["humaneval"] = pass_at_1(model, sandbox, chat=config.benchmark_chat, log=log("humaneval"))
    return benchmarks
