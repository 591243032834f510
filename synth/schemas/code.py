"""Configs for code generation: the sandbox's limits and SelfCodeAlign's settings."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from synth.schemas.config import SamplingConfig, _identity, _language, _max_batches, _Profiled, _sampling
from synth.schemas.records import Block

Isolation = Literal["bubblewrap", "none-unsafe"]
MAX_SLOTS = 256  # programs a sandbox runs at once, at most: each slot runs as a user of its own


class SandboxConfig(BaseModel):
    """The limits generated code runs under (see `synth.sandbox`), and how many programs run at once."""

    model_config = ConfigDict(extra="forbid")

    timeout_s: float = Field(default=10.0, gt=0, description="Wall-clock seconds a program may run.")
    cpu_s: int = Field(default=10, ge=1, description="CPU seconds a program may use.")
    memory_mb: int = Field(default=1024, ge=64, description="Address space a process may map, in MiB.")
    processes: int = Field(default=32, ge=1, description="Processes and threads a program may have at once.")
    output_kb: int = Field(default=1024, ge=1, description="What a program may print or write to one file, in KiB.")
    tmp_mb: int = Field(default=64, ge=1, description="Size of the private /tmp, in MiB.")
    workers: int = Field(default=0, ge=0, le=MAX_SLOTS, description="Programs run at once; 0: one per CPU core.")

    def slots(self) -> int:
        import os

        return self.workers or min(os.cpu_count() or 1, MAX_SLOTS)


class SelfCodeAlignConfig(_Profiled):
    """SelfCodeAlign (Wei et al. 2024): Python instruction data that passed its own tests.

    Each seed function is turned into the concepts it uses (few-shot), the concepts into a task
    of a drawn category and difficulty (few-shot), the task into several responses, each with its
    own tests; every response runs against its tests in the sandbox and a task keeps one passing
    response, drawn at random. Defaults are the reference code's: 8 demonstrations drawn for the
    concepts and task steps and 1 for the response step, every step sampled at temperature 0.7 with
    up to 1536 tokens, 10 responses per task, tasks over 200 words dropped, each program given 4
    seconds and 1 GiB (its local execution mode). Decontaminated against HumanEval's prompts and
    solutions; MBPP and others from files (`decontaminate`)."""

    _PROFILE_DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = {
        "small-model": {
            # A 135M model's context holds few demonstrations and its long answers are noise; at
            # temperature 0.7 none of its answers passed on 12 seeds, at 0.2 a third of the tasks
            # kept one (measured, 10 answers a task).
            "shots": 3,
            "concepts_sampling": {"temperature": 0.7, "top_p": 0.95, "max_tokens": 64},
            "task_sampling": {"temperature": 0.7, "top_p": 0.95, "max_tokens": 192},
            "response_sampling": {"temperature": 0.2, "top_p": 0.95, "max_tokens": 512},
        }
    }

    num_records: int = Field(default=100, ge=1, description="Stop once this many records are kept.")
    max_batches: int | None = _max_batches("until the target or the seeds end.")
    batch_size: int = Field(default=16, ge=1, description="Seed snippets per batch.")
    code: str | None = Field(
        default=None,
        description="A Python file or a folder of them to cut seed functions from; default: the standard library.",
    )
    classes: bool = Field(default=False, description="Seed with top-level classes too (the paper: functions only).")
    shots: int = Field(default=8, ge=0, description="Demonstrations drawn for the concepts and the task steps.")
    response_shots: int = Field(default=1, ge=0, description="Demonstrations drawn for the response step.")
    samples: int = Field(default=10, ge=1, description="Responses sampled per task; one that passes is kept.")
    max_task_words: int = Field(default=200, ge=1, description="Longer tasks are dropped.")
    humaneval: bool = Field(
        default=True, description="Drop seeds and records that contain a HumanEval prompt or solution."
    )
    decontaminate: list[str] = Field(
        default_factory=list, description="More benchmark files (JSONL: every string; text: a line each) to drop."
    )
    isolation: Isolation = Field(
        default="bubblewrap",
        description="How generated code runs: 'bubblewrap' (isolated) or 'none-unsafe' (on the host, limits only).",
    )
    sandbox: SandboxConfig = Field(default_factory=lambda: SandboxConfig(timeout_s=4.0, cpu_s=4, memory_mb=1024))
    language: str = _language()
    concepts_sampling: SamplingConfig = _sampling(temperature=0.7, top_p=1.0, max_tokens=1536)
    task_sampling: SamplingConfig = _sampling(temperature=0.7, top_p=1.0, max_tokens=1536)
    response_sampling: SamplingConfig = _sampling(temperature=0.7, top_p=1.0, max_tokens=1536)
    seed: int = Field(default=0, description="Run seed: the seeds' order, the drawn demonstrations and properties.")

    def input_paths(self) -> dict[str, str | None]:
        return {"code": self.code, **{f"decontaminate[{i}]": p for i, p in enumerate(self.decontaminate)}}

    def identity(self) -> dict[str, Any]:
        """What defines a run's output: not the target, the budget, how code is isolated or how many
        programs run at once."""
        data = _identity(self, {"num_records", "max_batches", "isolation"})
        data["sandbox"].pop("workers", None)
        return data


class OSSInstructConfig(_Profiled):
    """OSS-Instruct (Magicoder, Wei et al. 2023): problems and solutions inspired by real code.

    Each seed is 1 to 15 consecutive lines (the count drawn uniformly) from a random place of a
    random Python file of the corpus (the standard library, or `code`); the model writes a problem
    the snippet inspires and its solution, in one reply with a `[Problem Description]` and a
    `[Solution]` section. Defaults are the reference code's: greedy decoding, up to 2500 tokens, one
    reply per seed, a system message that casts the model as a problem setter; replies cut off at
    the token limit dropped. `execute` runs a solution's Python code with its asserts in the
    sandbox and drops it when it fails (off, as in the paper, which does not run its solutions)."""

    _PROFILE_DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = {
        "small-model": {"sampling": {"temperature": 0.0, "top_p": 1.0, "max_tokens": 512}},
    }

    num_records: int = Field(default=100, ge=1, description="Stop once this many records are kept.")
    max_batches: int | None = _max_batches(None)
    batch_size: int = Field(default=32, ge=1, description="Seeds per batch.")
    code: str | None = Field(
        default=None,
        description="A Python file or a folder of them to draw snippets from; default: the standard library.",
    )
    min_lines: int = Field(default=1, ge=1, description="Fewest lines in a snippet.")
    max_lines: int = Field(default=15, ge=1, description="Most lines in a snippet.")
    execute: bool = Field(default=False, description="Run solutions that carry asserts in the sandbox; drop failures.")
    humaneval: bool = Field(default=True, description="Drop records that contain a HumanEval prompt or solution.")
    decontaminate: list[str] = Field(default_factory=list, description="More benchmark files to drop.")
    isolation: Isolation = Field(default="bubblewrap", description="How solutions run when `execute` is on.")
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    system_prompt: str = Field(
        default="You are exceptionally good at writing high-quality programming problems and giving precise solutions.",
        description="The system message of every request (empty: none).",
    )
    language: str = _language()
    sampling: SamplingConfig = _sampling(temperature=0.0, top_p=1.0, max_tokens=2500)
    seed: int = Field(default=0, description="Run seed: which files and lines the snippets come from.")

    @model_validator(mode="after")
    def _lines_in_order(self) -> OSSInstructConfig:
        if self.min_lines > self.max_lines:
            raise ValueError(f"min_lines {self.min_lines} is over max_lines {self.max_lines}")
        return self

    def input_paths(self) -> dict[str, str | None]:
        return {"code": self.code, **{f"decontaminate[{i}]": p for i, p in enumerate(self.decontaminate)}}

    def identity(self) -> dict[str, Any]:
        data = _identity(self, {"num_records", "max_batches", "isolation"})
        data["sandbox"].pop("workers", None)
        return data


class Code(Block):
    """Generated code's own block (SelfCodeAlign, OSS-Instruct): the tests the response carried (or
    the program that exercised it) and how solution and tests ended when run in the sandbox
    (`passed`, or the failure's kind on a reject). Datasets written before the block held these as
    flat columns of the same names."""

    column = "code"
    title = "Code"
    legacy = ("tests", "execution")

    tests: str | None = None
    execution: str | None = None
