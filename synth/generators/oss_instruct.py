"""OSS-Instruct (Magicoder, Wei et al. 2023): coding problems and solutions inspired by real code.

Each seed is a few consecutive lines of a real Python file (`code_seeds.line_snippet`: 1 to 15
lines from a random place of a random file); the model, cast by a system message as a problem
setter, writes a problem the snippet inspires and its solution, in one reply with a
`[Problem Description]` and a `[Solution]` section (in that order, matched case-insensitively).
The record's instruction is the problem and its output the solution; the snippet's file and lines
are its `source_doc`, `source_start` and `source_end`.

Rejects: no readable snippet in ten draws (`document`); a reply cut off at the token limit, or
without both sections in order, or with an empty one (`parse`); a model call that failed (`engine`);
a problem or solution holding a benchmark's text (`decontamination`); with `execute`, a solution
whose Python code carries asserts and fails them in the sandbox (`execution`, its kind as the
reason). With `execute`, a solution that ran is `execution: passed`; one without asserts is kept
untested (tag `untested`), as the paper keeps every solution.
Reference: Wei et al., "Magicoder: Empowering Code Generation with OSS-Instruct", ICML 2024.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from synth.engines import ChatRequest, Engine
from synth.filters.code_benchmarks import CodeContamination, file_pieces, humaneval_pieces
from synth.generators.code_replies import CodeOutcome, execution_detail
from synth.generators.code_seeds import Snippet, code_files, line_snippet
from synth.generators.provenance import Origin, request_seed
from synth.prompts import TemplateSet
from synth.sandbox import Sandbox
from synth.schemas import Message, Record, Reject
from synth.schemas.code import Code, OSSInstructConfig

GENERATOR = "oss_instruct"
PROMPT = "oss_instruct"
TEMPLATES = TemplateSet((PROMPT,))
_PROBLEM = re.compile(r"\[problem description\]", re.IGNORECASE)
_SOLUTION = re.compile(r"\[solution\]", re.IGNORECASE)
_FENCE = re.compile(r"```(?:python|py)[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)


def parse_reply(text: str) -> tuple[str, str] | str:
    """(problem, solution) of a reply, or why it holds none."""
    problem = _PROBLEM.search(text)
    solution = _SOLUTION.search(text)
    if problem is None or solution is None:
        return "no [Problem Description] and [Solution] sections"
    if solution.start() < problem.end():
        return "[Solution] comes before [Problem Description]"
    body, answer = text[problem.end() : solution.start()].strip(), text[solution.end() :].strip()
    if not body or not answer:
        return "an empty problem or solution"
    return body, answer


def program_with_asserts(solution: str) -> str | None:
    """The solution's Python code blocks as one program, when they assert something; else None."""
    blocks = _FENCE.findall(solution)
    program = "\n\n".join(b.strip() for b in blocks)
    return program + "\n" if blocks and re.search(r"^\s*assert\b", program, re.MULTILINE) else None


class OSSInstructGenerator:
    """Makes one batch of seeds into records (see the module's docstring). Writes nothing."""

    def __init__(self, config: OSSInstructConfig, engine: Engine, *, run_id: str, sandbox: Sandbox | None) -> None:
        self.config = config
        self.engine = engine
        self.sandbox = sandbox
        self.template = TEMPLATES.load(config.language)[PROMPT]
        self.origin = Origin(GENERATOR, run_id, config.seed, getattr(engine, "model_name", ""))
        self.files = code_files(config.code)
        pieces = humaneval_pieces() if config.humaneval else []
        for path in config.decontaminate:
            pieces += file_pieces(path)
        self.contamination = CodeContamination(pieces)

    def snippet(self, number: int) -> Snippet | None:
        draw = random.Random(request_seed(self.config.seed, "snippet", number))
        return line_snippet(self.files, draw, self.config.min_lines, self.config.max_lines)

    def run_batch(self, batch: int, numbers: Sequence[int], generated: Callable[[], None] | None = None) -> CodeOutcome:
        out = CodeOutcome()
        seeds: list[tuple[int, Snippet]] = []
        for number in numbers:
            found = self.snippet(number)
            if found is None:
                why = "no readable, non-blank lines in ten draws"
                out.rejects.append(Reject(**self._fields(batch, number), instruction="", stage="document", reason=why))
            else:
                seeds.append((number, found))
        requests = [self._request(number, snippet) for number, snippet in seeds]
        replies = self.engine.chat(requests) if requests else []
        if generated is not None:
            generated()
        tested: list[tuple[Record, str]] = []
        for (number, snippet), reply in zip(seeds, replies, strict=True):
            fields = self._fields(batch, number, snippet)
            if reply.finish_reason == "error":
                out.rejects.append(
                    Reject(
                        **fields, stage="engine", reason="the call failed", detail=reply.error or "", raw=snippet.text
                    )
                )
                continue
            parsed = "cut off at the token limit" if reply.finish_reason == "length" else parse_reply(reply.text)
            if isinstance(parsed, str):
                out.rejects.append(Reject(**fields, instruction="", stage="parse", reason=parsed, raw=reply.text))
                continue
            problem, solution = parsed
            record = Record(**fields, instruction=problem, output=solution, tags=["oss-instruct"])
            if hit := self.contamination.hit(problem, solution):
                out.rejects.append(
                    Reject(
                        **record.model_dump(exclude={"id"}),
                        stage="decontamination",
                        reason="holds benchmark text",
                        detail=hit,
                    )
                )
                continue
            program = program_with_asserts(solution) if self.config.execute else None
            if program is not None:
                tested.append((record, program))
            elif self.config.execute:
                out.kept.append(record.model_copy(update={"tags": [*record.tags, "untested"]}))
            else:
                out.kept.append(record)
        self._run(tested, out)
        return out

    def _run(self, tested: list[tuple[Record, str]], out: CodeOutcome) -> None:
        if not tested:
            return
        assert self.sandbox is not None
        started = time.monotonic()
        runs = list(self.sandbox.run_many(program for _, program in tested))
        out.execution_seconds = time.monotonic() - started
        for (record, program), run in zip(tested, runs, strict=True):
            if run.passed:
                out.kept.append(record.model_copy(update={"code": Code(tests=program, execution="passed")}))
            else:
                out.rejects.append(
                    Reject(
                        **record.model_dump(exclude={"id", "code"}),
                        stage="execution",
                        reason=run.kind,
                        detail=execution_detail(run),
                        code=Code(tests=program, execution=run.kind),
                    )
                )

    def _request(self, number: int, snippet: Snippet) -> ChatRequest:
        system = [Message(role="system", content=self.config.system_prompt)] if self.config.system_prompt else []
        user = Message(role="user", content=self.template.render(snippet=snippet.text))
        sampling = self.config.sampling.model_copy(update={"seed": request_seed(self.config.seed, "reply", number)})
        return ChatRequest(messages=[*system, user], sampling=sampling, tag=PROMPT)

    def _fields(self, batch: int, number: int, snippet: Snippet | None = None) -> dict[str, Any]:
        fields = self.origin.fields(batch, template=self.template, sampling=self.config.sampling)
        fields["seed"] = number
        if snippet is not None:
            fields |= {"source_doc": snippet.path, "source_start": snippet.start, "source_end": snippet.end}
        return fields


def check_inputs(config: OSSInstructConfig, dataset: str | Path) -> None:
    """Find the code files, read the benchmark files, and, where solutions run, the sandbox."""
    TEMPLATES.load(config.language)  # the language has every prompt
    code_files(config.code)
    for path in config.decontaminate:
        file_pieces(path)
    if config.execute:
        Sandbox(isolation=config.isolation).available()
