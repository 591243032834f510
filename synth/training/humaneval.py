"""HumanEval pass@1 of a model folder: greedy completions run against the benchmark's tests in the sandbox.

As the benchmark defines it (Chen et al. 2021): the model continues each problem's prompt (a
signature and docstring, no chat template); the completion is cut at the first line that starts a
new top-level block (`def`, `class`, `if`, `print`, `#`), which is what ends a function body; the
prompt, the completion, the problem's test code and `check(ENTRY_POINT)` run as one program; a
problem passes when the program exits cleanly. pass@1 from one greedy sample per problem is the
share that pass. The programs run in `synth.sandbox` (no network, limits; HumanEval's own harness
runs them in the evaluating process), each with 10 seconds.

A chat model (no base model) writes prose around its code when it merely continues a prompt: with
`chat` each problem is asked as a user turn in the model's chat template instead, and the first
code block of the reply that defines the entry point is the solution (after the prompt, so the
prompt's imports are there), as EvalPlus scores chat models; a reply without one is read as a body.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from synth.filters.code_benchmarks import CodeProblem, humaneval_problems
from synth.sandbox import Sandbox
from synth.schemas.code import SandboxConfig
from synth.training.answering import Answerer
from synth.training.answers import AnswerLog, answered

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
    # Whether each problem passed, in the benchmark's order (empty in results from before it was kept)
    passed_each: list[bool] = []


def truncate(completion: str) -> str:
    """The completion up to the first line that starts a new top-level block."""
    cut = min((i for i in (completion.find(s) for s in STOPS) if i >= 0), default=len(completion))
    return completion[:cut]


def program(problem: CodeProblem, completion: str) -> str:
    return f"{problem.prompt}{truncate(completion)}\n\n{problem.test}\n\ncheck({problem.entry_point})\n"


CHAT_ASK = (
    "Complete this Python function. Reply with the whole function in one Python code block.\n\n```python\n{prompt}```"
)
_FENCE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)(?:```|$)", re.DOTALL | re.IGNORECASE)


def chat_program(problem: CodeProblem, reply: str) -> str:
    """The program for a chat model's reply: the first code block that defines the entry point,
    after the prompt (so its imports and helpers are there); else the reply read as a body."""
    for block in _FENCE.findall(reply):
        if re.search(rf"^\s*def {re.escape(problem.entry_point)}\s*\(", block, re.MULTILINE):
            return f"{problem.prompt}\n    pass\n\n\n{block}\n\n{problem.test}\n\ncheck({problem.entry_point})\n"
    return program(problem, reply)


def problems(limit: int | None = None) -> Sequence[CodeProblem]:
    every = humaneval_problems()
    return every[:limit] if limit else every


def render(
    tokenizer: Any, prompts: Sequence[str], chat: bool = False, ask: str = CHAT_ASK, system: str = ""
) -> list[str]:
    """The text each prompt is answered from: as given (raw, to continue), or (`chat`) asked as a
    user turn (`ask` with the prompt in its place, after `system` when given) in the model's chat
    template, ending where the assistant's reply begins."""
    if not chat:
        return list(prompts)
    opening = [{"role": "system", "content": system}] if system else []
    return [
        tokenizer.apply_chat_template(
            [*opening, {"role": "user", "content": ask.format(prompt=p)}], tokenize=False, add_generation_prompt=True
        )
        for p in prompts
    ]


def pass_at_1(model: Answerer, sandbox: Sandbox, *, chat: bool = False, log: AnswerLog | None = None) -> BenchmarkScore:
    """HumanEval pass@1 (greedy) of `model`: completions of each prompt (raw, or `chat`: asked in
    the chat template its tokenizer renders; those `log` holds from an unfinished run are read
    back), programs run in `sandbox`."""
    chosen = problems(model.limit)
    model.say(f"HumanEval: {model.name} completes {len(chosen)} problems")

    def make(prompts: Sequence[str], keep: Callable[[int, int, list[str]], None]) -> list[str]:
        rendered = render(model.tokenizer, prompts, chat=chat)
        return model.answers(rendered, model.max_new_tokens, () if chat else STOPS, keep)

    completions, reused = answered([p.task_id for p in chosen], [p.prompt for p in chosen], log, make)
    if reused:
        model.say(f"HumanEval: {reused} of {model.name}'s completions read back from an unfinished evaluation")
    build = chat_program if chat else program
    runs = list(sandbox.run_many(build(p, c) for p, c in zip(chosen, completions, strict=True)))
    passed = sum(r.passed for r in runs)
    failures = Counter(r.kind for r in runs if not r.passed)
    score = passed / len(chosen) if chosen else math.nan
    return BenchmarkScore(
        model=model.name,
        problems=len(chosen),
        passed=passed,
        pass_at_1=round(score, 4),
        failures=dict(failures),
        passed_each=[r.passed for r in runs],
    )
