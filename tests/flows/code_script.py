"""A scripted model for `synth generate code`: concepts and a task in the expected form, and answers
that pass, fail an assertion or raise, chosen by each request's sampling seed (so a retried or
resumed batch gets the same answers, on any worker)."""

from __future__ import annotations

from synth.engines import ChatRequest
from synth.generators.self_code_align import CONCEPTS, TASK


def _answer(solution: str, tests: str) -> str:
    return f"Double it.\n\n```python\n{solution}\n```\n</response>\n\n<tests>\n```python\n{tests}\n```\n"


ANSWERS = (
    _answer("def double(x):\n    return 2 * x", "assert double(4) == 8"),
    _answer("def double(x):\n    return x + 2", "assert double(4) == 8"),
    _answer("def double(x):\n    return x * undefined", "assert double(4) == 8"),
)


def reply(request: ChatRequest) -> str:
    if request.tag == "oss_instruct":  # a problem with a tested solution, or (one in three) a reply without sections
        seed = request.sampling.seed if request.sampling and request.sampling.seed is not None else 0
        if seed % 3 == 2:
            return "Here is some code."
        wrong = " + 1" if seed % 3 == 1 else ""
        return (
            f"[Problem Description]\nWrite `double(x)` (problem {seed % 101}).\n\n[Solution]\n```python\n"
            f"def double(x):\n    return 2 * x{wrong}\n\nassert double(3) == 6\n```\n"
        )
    if request.tag == CONCEPTS:
        return "arithmetic, functions\n"
    if request.tag == TASK:
        seed = request.sampling.seed if request.sampling else 0
        return f"Write `double(x)` that returns twice x (variant {seed % 97}).\n\n"
    seed = request.sampling.seed if request.sampling and request.sampling.seed is not None else 0
    return ANSWERS[seed % len(ANSWERS)]


def responder():
    return reply


def slow_responder():
    """`reply`, each after 50 ms: a run takes long enough to be killed mid-way."""
    import time

    def slow(request: ChatRequest) -> str:
        time.sleep(0.05)
        return reply(request)

    return slow


def seed_folder(path, modules: int = 3) -> None:
    """A small code base of documented functions (four per module): the seeds of a test run."""
    path.mkdir(parents=True, exist_ok=True)
    for module in range(modules):
        functions = [
            f'def scale_{module}_{n}(values, factor={n + 1}):\n    """Multiply each value by {n + 1}."""\n'
            f"    return [v * factor for v in values]\n"
            for n in range(4)
        ]
        (path / f"module_{module}.py").write_text("\n\n".join(functions))
