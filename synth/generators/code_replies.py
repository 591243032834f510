"""What the code generators read from the model and from our pool: SelfCodeAlign's few-shot
demonstrations, the parts of an answer (response, solution, tests), and what a program's run in
the sandbox says about it."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

from synth.sandbox import Execution
from synth.schemas import Outcome

PLACEHOLDERS = re.compile(r"\b(todo|fixme|your code here|not ?implemented|implement (this|me))\b", re.IGNORECASE)
_FENCE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)
_DETAIL = 1500


@dataclass(frozen=True)
class Demonstration:
    """One example of the few-shot pool: a snippet, its concepts, the task's properties, the task
    and its answer (approach, solution, tests); every one passes its tests (a test runs them)."""

    id: str
    snippet: str
    concepts: str
    category: str
    difficulty: str
    task: str
    reasoning: str
    code: str
    tests: str


@cache
def demonstrations() -> tuple[Demonstration, ...]:
    text = resources.files("synth.generators").joinpath("seeds/code_examples.jsonl").read_text(encoding="utf-8")
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    return tuple(Demonstration(id=f"code-example-{i}", **row) for i, row in enumerate(rows, 1))


def demonstrations_hash() -> str:
    import hashlib

    return hashlib.sha256(repr(demonstrations()).encode()).hexdigest()[:12]


@dataclass
class CodeOutcome(Outcome):
    """A batch's records and rejects, and the wall time its programs took in the sandbox."""

    execution_seconds: float = 0.0


@dataclass(frozen=True)
class Answer:
    """One parsed answer to a task: the response text (approach and solution), the solution's
    code and the tests' code."""

    response: str
    solution: str
    tests: str

    def program(self) -> str:
        return f"{self.solution}\n\n\n{self.tests}\n"


def parse_answer(text: str) -> Answer | str:
    """The answer a response-step reply holds (the prompt opened `<response>`), or why it holds none."""
    body, marker, rest = text.partition("</response>")
    if not marker:
        return "no </response>"
    tests_part = rest.split("<tests>", 1)
    if len(tests_part) != 2:
        return "no <tests> after the response"
    solution_blocks = _FENCE.findall(body)
    test_blocks = _FENCE.findall(tests_part[1].split("</tests>", 1)[0])
    if not solution_blocks:
        return "no Python code block in the response"
    if not test_blocks:
        return "no Python code block in the tests"
    tests = "\n".join(test_blocks).strip()
    if "assert" not in tests:
        return "the tests assert nothing"
    if found := PLACEHOLDERS.search(body + tests):
        return f"placeholder text ({found.group(0)!r})"
    return Answer(body.strip(), "\n\n".join(b.strip() for b in solution_blocks), tests)


def first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip().strip("`").strip()
    return ""


def task_text(text: str) -> str:
    """The task a task-step reply holds: the text before any next section."""
    return re.split(r"\n#{2,3} ", "\n" + text, maxsplit=1)[0].strip() if text.strip() else ""


def execution_detail(run: Execution) -> str:
    parts = [run.error()]
    if run.stdout.strip():
        parts.append("stdout: " + run.stdout[-_DETAIL // 2 :])
    if run.stderr.strip():
        parts.append("stderr: " + run.stderr[-_DETAIL:])
    return "\n".join(parts)
