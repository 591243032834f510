"""SelfCodeAlign (Wei et al. 2024): Python tasks and responses that passed their own tests.

For each seed function (`synth.generators.code_seeds`) the model, continuing few-shot documents
(raw prompts, no chat template, as the reference prompts a base model):
1. names the concepts the seed uses (`shots` demonstrations drawn from our pool);
2. writes a task from properties drawn by the code, not the model: a category (function
   implementation with probability 1/2, class or program implementation 1/4 each), a difficulty
   (easy, medium, hard), the language (Python) and the concepts (`shots` demonstrations);
3. answers the task `samples` times, each answer a response (approach and solution) and tests
   (`response_shots` demonstrations; generation stops at `</tests>`).
Each answer in the expected form runs, solution then tests, in the sandbox; a task keeps one
passing answer drawn at random, and the record's output is the response, its tests in `tests`.

Rejects, each with its stage: a seed or record holding a benchmark's text (`decontamination`);
no concepts or no task in a reply, an answer not in the form, without an assert, or with
placeholder words such as "todo" (`parse`); a task over `max_task_words` words (`heuristic`); an
answer that failed in the sandbox (`execution`, the reason its kind: assertion, exception, exit,
timeout, memory, output, refused; the error's last line and the output's tails in `detail`); the
other passing answers of a task (`dedup`); a model call that failed (`engine`).

Where the model's context is known and the drawn demonstrations would not leave room for the
reply, demonstrations are dropped from the end until they do (the record's `demos` lists those
used). Reference: Wei et al., "SelfCodeAlign: Self-Alignment for Code Generation", NeurIPS 2024.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from synth.engines import ChatRequest, Engine
from synth.engines.base import Completion, context_length
from synth.filters.code_benchmarks import CodeContamination, file_pieces, humaneval_pieces
from synth.generators.code_replies import (
    Answer,
    CodeOutcome,
    Demonstration,
    demonstrations,
    execution_detail,
    first_line,
    parse_answer,
    task_text,
)
from synth.generators.code_seeds import Snippet, usable_seeds
from synth.generators.provenance import Origin, request_seed
from synth.prompts import Template, TemplateSet
from synth.sandbox import Sandbox
from synth.schemas import Outcome, Record, Reject, Sampling
from synth.schemas.code import Code, SelfCodeAlignConfig

GENERATOR = "code"  # `synth generate code`; the records' tags say which method made them
CONCEPTS, TASK, RESPONSE = "code_concepts", "code_task", "code_response"
TEMPLATES = TemplateSet((CONCEPTS, TASK, RESPONSE))
# The reference draws the category from this list, so a function implementation comes up half the time.
CATEGORIES = ("function implementation", "function implementation", "class implementation", "program implementation")
DIFFICULTIES = ("easy", "medium", "hard")
_CHARS_PER_TOKEN = 3  # a safe bound for code in the tokenizers of common models (more chars per token in fact)


class SelfCodeAlignGenerator:
    """Makes one batch of seeds into records (see the module's docstring); holds the few-shot pool,
    the templates, the contamination check and the sandbox. Writes nothing."""

    def __init__(self, config: SelfCodeAlignConfig, engine: Engine, *, run_id: str, sandbox: Sandbox) -> None:
        self.config = config
        self.engine = engine
        self.sandbox = sandbox
        self.templates = TEMPLATES.load(config.language)
        self.origin = Origin(GENERATOR, run_id, config.seed, getattr(engine, "model_name", ""))
        self.pool = demonstrations()
        pieces = humaneval_pieces() if config.humaneval else []
        for path in config.decontaminate:
            pieces += file_pieces(path)
        self.contamination = CodeContamination(pieces)
        self.context = context_length(engine)

    def run_batch(
        self, batch: int, seeds: Sequence[Snippet], generated: Callable[[], None] | None = None
    ) -> CodeOutcome:
        """Make a batch of `seeds`; `generated` is called once the model's part is done, before the
        answers run in the sandbox."""
        out = CodeOutcome()
        clean = []
        for seed in seeds:
            if hit := self.contamination.hit(seed.text):
                out.rejects.append(self._reject(batch, seed, "decontamination", "seed holds benchmark text", hit))
            else:
                clean.append(seed)
        concepts = self._concepts(batch, clean, out)
        tasks = self._tasks(batch, concepts, out)
        answers = self._answers(batch, tasks, out)
        if generated is not None:
            generated()
        self._execute(batch, answers, out)
        return out

    # -- step 1: seed -> concepts
    def _concepts(self, batch: int, seeds: list[Snippet], out: Outcome) -> list[tuple[Snippet, str, list[str]]]:
        template, sampling = self.templates[CONCEPTS], self.config.concepts_sampling
        prompts = []
        for seed in seeds:
            shots = self._draw(self.config.shots, "concepts", seed.id)
            prompts.append(self._fit(template, sampling, shots, self._concept_example, snippet=seed.text))
        replies = self._ask(prompts, sampling, CONCEPTS, [("concepts", s.id) for s in seeds], ["\n## Example", "\n###"])
        made = []
        for seed, (_, shots), reply in zip(seeds, prompts, replies, strict=True):
            if reply.finish_reason == "error":
                out.rejects.append(self._reject(batch, seed, "engine", "the concepts call failed", reply.error or ""))
                continue
            concepts = first_line(reply.text)
            if not concepts:
                out.rejects.append(self._reject(batch, seed, "parse", "no concepts in the reply", raw=reply.text))
                continue
            made.append((seed, concepts, [d.id for d in shots]))
        return made

    # -- step 2: concepts -> task
    def _tasks(self, batch: int, found: list[tuple[Snippet, str, list[str]]], out: Outcome) -> list[dict[str, Any]]:
        template, sampling = self.templates[TASK], self.config.task_sampling
        prompts, properties = [], []
        for seed, concepts, _ in found:
            draw = random.Random(request_seed(self.config.seed, "properties", seed.id))
            props = {"category": draw.choice(CATEGORIES), "language": "Python", "difficulty": draw.choice(DIFFICULTIES)}
            properties.append(props)
            shots = self._draw(self.config.shots, "task", seed.id)
            prompts.append(self._fit(template, sampling, shots, self._task_example, concepts=concepts, **props))
        replies = self._ask(prompts, sampling, TASK, [("task", s.id) for s, _, _ in found], ["\n## Example"])
        tasks = []
        for (seed, concepts, demos), props, (_, shots), reply in zip(found, properties, prompts, replies, strict=True):
            if reply.finish_reason == "error":
                out.rejects.append(
                    self._reject(batch, seed, "engine", "the task call failed", reply.error or "", step=TASK)
                )
                continue
            task = task_text(reply.text)
            if not task:
                out.rejects.append(
                    self._reject(batch, seed, "parse", "no task in the reply", raw=reply.text, step=TASK)
                )
                continue
            if len(task.split()) > self.config.max_task_words:
                why = f"task over {self.config.max_task_words} words"
                out.rejects.append(self._reject(batch, seed, "heuristic", why, raw=task, step=TASK))
                continue
            tags = [
                "self-code-align",
                f"category:{props['category']}",
                f"difficulty:{props['difficulty']}",
                f"concepts:{concepts}",
            ]
            tasks.append({"seed": seed, "task": task, "tags": tags, "demos": demos + [d.id for d in shots]})
        return tasks

    # -- step 3: task -> answers
    def _answers(self, batch: int, tasks: list[dict[str, Any]], out: Outcome) -> list[tuple[dict[str, Any], Answer]]:
        template, sampling = self.templates[RESPONSE], self.config.response_sampling
        prompts, keys, owners = [], [], []
        for task in tasks:
            shots = self._draw(self.config.response_shots, "response", task["seed"].id)
            fitted = self._fit(template, sampling, shots, self._response_example, task=task["task"])
            for sample in range(self.config.samples):
                prompts.append(fitted)
                keys.append(("response", task["seed"].id, sample))
                owners.append(task)
        replies = self._ask(prompts, sampling, RESPONSE, keys, ["</tests>"])
        answers = []
        for task, (_, shots), reply in zip(owners, prompts, replies, strict=True):
            raw = reply.text + ("</tests>" if reply.finish_reason == "stop" else "")
            if reply.finish_reason == "error":
                out.rejects.append(
                    self._task_reject(batch, task, "engine", "the response call failed", reply.error or "")
                )
                continue
            parsed = parse_answer(raw)
            if isinstance(parsed, str):
                cut = " (cut off at the token limit)" if reply.finish_reason == "length" else ""
                out.rejects.append(self._task_reject(batch, task, "parse", parsed + cut, raw=raw))
                continue
            answers.append(({**task, "shots": [d.id for d in shots]}, parsed))
        return answers

    # -- step 4: run each answer; keep one passing answer per task
    def _execute(self, batch: int, answers: list[tuple[dict[str, Any], Answer]], out: CodeOutcome) -> None:
        started = time.monotonic()
        runs = list(self.sandbox.run_many(answer.program() for _, answer in answers))
        out.execution_seconds = time.monotonic() - started
        passing: dict[str, list[tuple[dict[str, Any], Answer]]] = {}
        for (task, answer), run in zip(answers, runs, strict=True):
            if run.passed:
                passing.setdefault(task["seed"].id, []).append((task, answer))
            else:
                detail = execution_detail(run)
                reject = self._task_reject(batch, task, "execution", run.kind, detail, raw=answer.response)
                out.rejects.append(reject.model_copy(update={"code": Code(tests=answer.tests, execution=run.kind)}))
        for seed_id, found in passing.items():
            draw = random.Random(request_seed(self.config.seed, "keep", seed_id))
            chosen = draw.randrange(len(found))
            for i, (task, answer) in enumerate(found):
                record = self._record(batch, task, answer)
                if i != chosen:
                    why = "another passing answer to the same task was kept"
                    out.rejects.append(Reject(**record.model_dump(exclude={"id"}), stage="dedup", reason=why))
                elif hit := self.contamination.hit(task["task"], answer.response):
                    why = "holds benchmark text"
                    out.rejects.append(
                        Reject(**record.model_dump(exclude={"id"}), stage="decontamination", reason=why, detail=hit)
                    )
                else:
                    out.kept.append(record)

    # -- helpers
    def _draw(self, count: int, step: str, seed_id: str) -> list[Demonstration]:
        draw = random.Random(request_seed(self.config.seed, step, seed_id))
        return draw.sample(list(self.pool), min(count, len(self.pool)))

    def _fit(
        self,
        template: Template,
        sampling: Sampling,
        shots: list[Demonstration],
        show: Callable[[int, Demonstration], str],
        **values: str,
    ) -> tuple[str, list[Demonstration]]:
        """The prompt with as many of `shots` as leave room for the reply in the model's context."""
        while True:
            examples = "".join(show(i, d) for i, d in enumerate(shots, 1))
            prompt = template.render(examples=examples, number=len(shots) + 1, **values)
            if not shots or self.context is None:
                return prompt, shots
            if len(prompt) // _CHARS_PER_TOKEN + min(sampling.max_tokens, 512) <= self.context:
                return prompt, shots
            shots = shots[:-1]

    def _ask(
        self,
        prompts: list[tuple[str, list[Demonstration]]],
        sampling: Sampling,
        tag: str,
        keys: list[Any],
        stop: list[str],
    ) -> list[Completion]:
        requests = []
        for (prompt, _), key in zip(prompts, keys, strict=True):
            tokens = sampling.max_tokens
            if self.context is not None:
                tokens = max(16, min(tokens, self.context - len(prompt) // _CHARS_PER_TOKEN))
            seed = request_seed(self.config.seed, *key)
            requests.append(
                ChatRequest(
                    raw=prompt,
                    sampling=sampling.model_copy(update={"seed": seed, "max_tokens": tokens}),
                    stop=stop,
                    tag=tag,
                )
            )
        return self.engine.chat(requests) if requests else []

    @staticmethod
    def _concept_example(number: int, d: Demonstration) -> str:
        return f"## Example {number}\n### Code\n```python\n{d.snippet}\n```\n### Concepts\n{d.concepts}\n\n"

    @staticmethod
    def _task_example(number: int, d: Demonstration) -> str:
        return (
            f"## Example {number}\n### Properties\ncategory: {d.category}\nlanguage: Python\n"
            f"difficulty: {d.difficulty}\nconcepts: {d.concepts}\n### Task\n{d.task}\n\n"
        )

    @staticmethod
    def _response_example(number: int, d: Demonstration) -> str:
        return (
            f"## Example {number}\n<task>\n{d.task}\n</task>\n<response>\n{d.reasoning}\n\n```python\n{d.code}\n```\n"
            f"</response>\n\n<tests>\n```python\n{d.tests}\n```\n</tests>\n\n"
        )

    def _common(self, batch: int, seed: Snippet, template: str) -> dict[str, Any]:
        fields = self.origin.fields(batch, template=self.templates[template])
        return fields | {"source_doc": seed.path, "source_start": seed.start, "source_end": seed.end}

    def _reject(
        self, batch: int, seed: Snippet, stage: str, reason: str, detail: str = "", raw: str = "", step: str = CONCEPTS
    ) -> Reject:
        return Reject(
            **self._common(batch, seed, step),
            instruction="",
            input=seed.text,
            stage=stage,  # type: ignore[arg-type]
            reason=reason,
            detail=detail,
            raw=raw or seed.text,
        )

    def _task_reject(
        self, batch: int, task: dict[str, Any], stage: str, reason: str, detail: str = "", raw: str = ""
    ) -> Reject:
        seed: Snippet = task["seed"]
        return Reject(
            **self._common(batch, seed, RESPONSE),
            instruction=task["task"],
            tags=task["tags"],
            demos=task["demos"],
            stage=stage,  # type: ignore[arg-type]
            reason=reason,
            detail=detail,
            raw=raw,
        )

    def _record(self, batch: int, task: dict[str, Any], answer: Answer) -> Record:
        seed: Snippet = task["seed"]
        return Record(
            **self._common(batch, seed, RESPONSE),
            sampling=self.config.response_sampling,
            instruction=task["task"],
            output=answer.response,
            code=Code(tests=answer.tests, execution="passed"),
            tags=task["tags"],
            demos=task["demos"] + task.get("shots", []),
        )


def check_inputs(config: SelfCodeAlignConfig, dataset: str | Path) -> None:
    """Cut the seed functions (a file that is not Python fails naming its line; no usable function
    at all is an error), read the benchmark files, and make sure generated code can run isolated."""
    TEMPLATES.load(config.language)  # the language has every prompt
    Sandbox(isolation=config.isolation).available()  # before the slower cut of the seeds
    usable_seeds(config.code, config.classes)
    for path in config.decontaminate:
        file_pieces(path)
