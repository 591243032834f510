"""HumanEval pass@1 of a model folder: greedy completions run against the benchmark's tests in the sandbox.

As the benchmark defines it (Chen et al. 2021): the model continues each problem's prompt (a
signature and docstring, no chat template); the completion is cut at the first line that starts a
new top-level block (`def`, `class`, `if`, `print`, `#`), which is what ends a function body; the
prompt, the completion, the problem's test code and `check(ENTRY_POINT)` run as one program; a
problem passes when the program exits cleanly. pass@1 from one greedy sample per problem is the
share that pass. The programs run in `synth.sandbox` (no network, limits; HumanEval's own harness
runs them in the evaluating process), each with 10 seconds.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from synth.filters.code_benchmarks import CodeProblem, humaneval_problems
from synth.sandbox import Sandbox
from synth.schemas.code import SandboxConfig

STOPS = ("\ndef ", "\nclass ", "\nif ", "\nprint(", "\n#")
SANDBOX = SandboxConfig(timeout_s=10.0, cpu_s=10)


class BenchmarkScore(BaseModel):
    """A model's result on a code benchmark."""

    model_config = ConfigDict(extra="forbid")

    model: str
    problems: int
    passed: int
    pass_at_1: float
    failures: dict[str, int]  # how the failing programs ended (sandbox kinds)


def truncate(completion: str) -> str:
    """The completion up to the first line that starts a new top-level block."""
    cut = min((i for i in (completion.find(s) for s in STOPS) if i >= 0), default=len(completion))
    return completion[:cut]


def program(problem: CodeProblem, completion: str) -> str:
    return f"{problem.prompt}{truncate(completion)}\n\n{problem.test}\n\ncheck({problem.entry_point})\n"


def problems(limit: int | None = None) -> Sequence[CodeProblem]:
    every = humaneval_problems()
    return every[:limit] if limit else every


def complete(model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int, batch_size: int = 8) -> list[str]:
    """Greedy completions of `prompts` (raw text, no chat template), in order."""
    import torch

    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    out: list[str] = []
    try:
        for start in range(0, len(prompts), batch_size):
            chunk = list(prompts[start : start + batch_size])
            encoded = tokenizer(chunk, return_tensors="pt", padding=True).to(model.device)
            with torch.no_grad():
                made = model.generate(
                    **encoded,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id,
                    stop_strings=list(STOPS),
                    tokenizer=tokenizer,
                )
            width = encoded["input_ids"].shape[1]
            out += tokenizer.batch_decode(made[:, width:], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
    return out


def pass_at_1(
    name: str,
    model: Any,
    tokenizer: Any,
    sandbox: Sandbox,
    *,
    limit: int | None = None,
    max_new_tokens: int = 512,
    progress: Callable[[str], None] | None = None,
) -> BenchmarkScore:
    """HumanEval pass@1 (greedy) of `model`: completions made here, programs run in `sandbox`."""
    chosen = problems(limit)
    if progress:
        progress(f"HumanEval: {name} completes {len(chosen)} problems")
    completions = complete(model, tokenizer, [p.prompt for p in chosen], max_new_tokens)
    runs = list(sandbox.run_many(program(p, c) for p, c in zip(chosen, completions, strict=True)))
    passed = sum(r.passed for r in runs)
    failures = Counter(r.kind for r in runs if not r.passed)
    score = passed / len(chosen) if chosen else math.nan
    return BenchmarkScore(
        model=name, problems=len(chosen), passed=passed, pass_at_1=round(score, 4), failures=dict(failures)
    )
