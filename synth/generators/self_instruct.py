"""Self-Instruct (Wang et al. 2022): the model grows a task pool from a few seed tasks.

Each batch, per prompt: sample in-context tasks (human seeds plus tasks generated earlier), ask the
model to continue the numbered list, parse the new tasks, drop those that break the heuristics or
score ROUGE-L above the threshold against the pool (seeds, earlier tasks and tasks accepted earlier
in the same batch), let the model decide which are classification tasks, then generate instances:
output-first for classification tasks (label, then an input for it), input-first for the rest.

Seed tasks and generated tasks are untrusted text: wherever they are placed into a prompt,
chat-control markers are defused (records keep the original text). A seed task larger than
`MAX_SEED_CHARS` is not used (see `seeds`; `skipped_seeds` lists the ids of any given here), and
records name their nearest pool tasks by reference (an id and a short snippet), so a record's size
does not grow with the seeds'.

Inputs: seed tasks (`SeedTask`), an engine, a `SelfInstructConfig`.
Outputs: `Record`s (one per instance) and `Reject`s with stage and reason; nothing is dropped silently.
Reference: Wang et al., "Self-Instruct: Aligning Language Models with Self-Generated Instructions", 2022.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from synth.engines import ChatRequest, Completion, Engine
from synth.filters import InstructionHeuristics, RougeNoveltyIndex
from synth.filters.heuristics import NON_TEXT_KEYWORDS, SELF_INSTRUCT_KEYWORDS
from synth.filters.novelty import neighbor_ref
from synth.filters.spill import Strings
from synth.generators.provenance import Origin, request_seed
from synth.generators.seeds import MAX_SEED_CHARS, load_seed_tasks, seed_chars
from synth.generators.self_instruct_replies import (
    TASK_LINE,
    instance_reasons,
    parse_instances,
    parse_is_classification,
    parse_task_list,
)
from synth.prompts import Template, TemplateSet, defuse
from synth.schemas import Message, Outcome, Record, Reject, Sampling, SeedTask, SelfInstructConfig

GENERATOR = "self_instruct"
TEMPLATES = TemplateSet(
    (
        "self_instruct_tasks",
        "self_instruct_classify",
        "self_instruct_open_ended",
        "self_instruct_instances_input_first",
        "self_instruct_instances_output_first",
        "self_instruct_demos_input_first",
        "self_instruct_demos_output_first",
    )
)
_INSTANCE_PREFILL = {True: "Example 1\nClass label:", False: "Example 1\nInput:"}
# The paper's prompts let the model decide whether a task needs an input: no "Input:" forced; its
# classification examples list "Class label:" blocks without "Example N" heads.
_INSTANCE_PREFILL_FREE = {True: "Class label:", False: "Example 1\n"}
_OPEN_ENDED_PREFILL = "Open-ended:"
_CLASSIFY_PREFILL = "Is it classification?"


def _listed(task: str) -> str:
    """A task as a numbered list shows it: defused, on one line, without a trailing colon (as the
    reference code lists its tasks: a colon there reads as the start of an input)."""
    return " ".join(defuse(task).split()).rstrip(":：").rstrip()


@dataclass
class BatchResult(Outcome):
    accepted_tasks: list[str] = field(default_factory=list)
    prompts: int = 0
    demos: dict[str, list[str]] = field(default_factory=dict)  # task -> the in-context tasks that produced it


class SelfInstructGenerator:
    """Runs Self-Instruct batch by batch; the task pool lives in this object between batches.

    `accept(tasks)` grows the pool after each committed batch and refills it when a run resumes. Batch `b` draws its
    in-context tasks from a generator seeded with (seed, b), so a run is deterministic given the
    same model replies, and a resumed run continues exactly where an uninterrupted one would.
    """

    def __init__(self, config: SelfInstructConfig, engine: Engine, seeds: Sequence[SeedTask], run_id: str = "") -> None:
        if not seeds:
            raise ValueError("Self-Instruct needs at least one seed task")
        # The loader skips oversized seeds already; seeds built in code are held to the same limit.
        self.skipped_seeds = [s.id for s in seeds if seed_chars(s) > MAX_SEED_CHARS]
        self.seeds = [s for s in seeds if seed_chars(s) <= MAX_SEED_CHARS]
        if not self.seeds:
            raise ValueError(f"Self-Instruct needs at least one seed task of at most {MAX_SEED_CHARS} characters")
        self.config = config
        self.engine = engine
        self.run_id = run_id
        self.origin = Origin(GENERATOR, run_id, config.seed, engine.model_name)
        # The pool's machine tasks, which task prompts sample from, in a mapped file (`Strings`).
        self.machine_tasks = Strings()
        keywords = NON_TEXT_KEYWORDS if config.extra_non_text_keywords else SELF_INSTRUCT_KEYWORDS
        self.heuristics = InstructionHeuristics(
            min_words=config.min_words, max_words=config.max_words, keywords=keywords, language=config.language
        )
        self.novelty = RougeNoveltyIndex(threshold=config.rouge_threshold, neighbors_kept=config.neighbors_kept)
        self.novelty.add([s.instruction for s in self.seeds], [s.id for s in self.seeds])
        t = TEMPLATES.load(config.language)
        self.t_tasks = t["self_instruct_tasks"]
        paper_question = config.classify_question == "classification"
        self.t_classify = t["self_instruct_classify" if paper_question else "self_instruct_open_ended"]
        self.t_input_first = t["self_instruct_instances_input_first"]
        self.t_output_first = t["self_instruct_instances_output_first"]
        self.t_demos = {False: t["self_instruct_demos_input_first"], True: t["self_instruct_demos_output_first"]}
        self._seed_refs = {_listed(s.instruction): neighbor_ref(s.instruction, s.id) for s in self.seeds}

    def add_to_pool(self, machine_tasks: Sequence[str]) -> None:
        """Add tasks to the pool: a batch's accepted tasks once its records are committed, or, when
        a run resumes, the tasks earlier batches accepted (in batch order, then text order)."""
        self.machine_tasks.extend(machine_tasks)
        self.novelty.add(machine_tasks)

    # -- prompts ---------------------------------------------------------------------------------

    def _sampling(self, base: Sampling, *where: object) -> Sampling:
        return base.model_copy(update={"seed": request_seed(self.config.seed, *where)})

    def demo_refs(self, request: ChatRequest) -> list[str]:
        """The in-context tasks a task prompt listed, as "id: snippet" (seed ids; content hashes
        for generated tasks), read back from the prompt's numbered list."""
        listed = [m.group(2) for line in (request.prefill or "").splitlines()[:-1] if (m := TASK_LINE.match(line))]
        return [self._seed_refs.get(text) or neighbor_ref(text) for text in listed]

    def task_request(self, rng: random.Random, batch: int, index: int) -> ChatRequest:
        """A prompt listing k in-context tasks (machine-generated ones first drawn, topped up with
        seeds), which the model continues from the next number on, as in the paper."""
        c = self.config
        n_machine = min(c.num_machine_demos, len(self.machine_tasks))
        demos = rng.sample(self.machine_tasks, n_machine)
        n_seed = min(c.num_seed_demos + c.num_machine_demos - n_machine, len(self.seeds))
        demos += [s.instruction for s in rng.sample(self.seeds, n_seed)]
        rng.shuffle(demos)
        listing = "".join(f"Task {i}: {_listed(d)}\n" for i, d in enumerate(demos, start=1))
        first = len(demos) + 1
        return ChatRequest(
            messages=[Message(role="user", content=self.t_tasks.render())],
            prefill=f"{listing}Task {first}:",
            sampling=self._sampling(c.task_sampling, batch, "tasks", index),
            stop=[f"Task {first + c.max_new_tasks_per_prompt}:"],
            tag=self.t_tasks.name,
        )

    def _seed_examples_open_ended(self) -> str:
        # Asked as "is it open-ended?" in the paper's few-shot continuation form: most tasks are
        # not classification tasks, the examples say so two to one, and the list ends on an
        # open-ended one. Measured on the embedded model: asked as "is it a classification
        # task?" it answered yes to everything; asked this way it told them apart.
        yes = [s for s in self.seeds if s.is_classification][:3]
        no = [s for s in self.seeds if not s.is_classification][:6]
        order = []
        while yes or no:
            order += no[:2] + yes[:1]
            no, yes = no[2:], yes[1:]
        if order and order[-1].is_classification:
            order.insert(0, order.pop())
        return "\n\n".join(
            f"Task: {defuse(s.instruction)}\n{_OPEN_ENDED_PREFILL} {'no' if s.is_classification else 'yes'}"
            for s in order
        )

    def classify_request(self, instruction: str, batch: int, index: int) -> ChatRequest:
        """Is the task a classification task? Asked the paper's way (a balanced few-shot list of
        our own, "Is it classification?"), or with `classify_question: open-ended` the inverted
        question with examples from the seeds."""
        if self.config.classify_question == "classification":
            prompt, prefill = self.t_classify.render(instruction=defuse(instruction)), _CLASSIFY_PREFILL
        else:
            examples = self._seed_examples_open_ended()
            prompt = self.t_classify.render(examples=examples, instruction=defuse(instruction))
            prefill = _OPEN_ENDED_PREFILL
        return ChatRequest(
            messages=[Message(role="user", content=prompt)],
            prefill=prefill,
            sampling=self._sampling(self.config.classify_sampling, batch, "classify", index),
            stop=["\n", "Task"],
            tag=self.t_classify.name,
        )

    def _demo_block(self, classification: bool) -> str:
        """Worked examples of instance generation: our own tasks with several examples each (the
        paper's kind of prompt), or with `instance_demos: seeds` one instance of two seed tasks."""
        if self.config.instance_demos == "template":
            return self.t_demos[classification].render()
        demos = [s for s in self.seeds if s.is_classification == classification and s.instances][:2]
        blocks = []
        for s in demos:
            inp, outp = defuse(s.instances[0].input) or "None", defuse(s.instances[0].output)
            if classification:
                body = f"Example 1\nClass label: {outp}\nInput: {inp}"
            else:
                body = f"Example 1\nInput: {inp}\nOutput: {outp}"
            blocks.append(f"Task: {defuse(s.instruction)}\n{body}")
        return "\n\n".join(blocks)

    def instance_request(self, instruction: str, classification: bool, batch: int, index: int) -> ChatRequest:
        template = self.t_output_first if classification else self.t_input_first
        prompt = template.render(
            examples=self._demo_block(classification),
            instruction=defuse(instruction),
            max_examples=self.config.instances_per_task,
        )
        prefills = _INSTANCE_PREFILL_FREE if self.config.instance_demos == "template" else _INSTANCE_PREFILL
        return ChatRequest(
            messages=[Message(role="user", content=prompt)],
            prefill=prefills[classification],
            sampling=self._sampling(self.config.instance_sampling, batch, "instances", index),
            stop=["\nTask:", f"Example {self.config.instances_per_task + 1}"],
            tag=template.name,
        )

    # -- one batch -------------------------------------------------------------------------------

    def _reject(self, batch: int, stage: str, reason: str, template: Template, **fields: object) -> Reject:
        return Reject(stage=stage, reason=reason, **self.origin.fields(batch, template=template), **fields)  # type: ignore[arg-type]

    def run_batch(self, batch: int, num_prompts: int | None = None) -> BatchResult:
        """Generate, filter and complete one batch of new tasks.

        The pool is not changed: call `accept(result.accepted_tasks)` once the batch is committed,
        so a batch that fails half-way can be retried as if it had never run.
        """
        c = self.config
        out = BatchResult(prompts=num_prompts or c.prompts_per_batch)
        rng = random.Random(f"{c.seed}:{batch}")
        requests = [self.task_request(rng, batch, i) for i in range(out.prompts)]
        replies = self.engine.chat(requests)

        candidates = self._parse_replies(batch, requests, replies, out)
        # Judged in text order so the pool's order is the same in a resumed run as in a live one.
        candidates = sorted(dict.fromkeys(candidates))
        passed = []
        for task in candidates:
            if reason := self.heuristics.reason(task):
                out.rejects.append(
                    self._reject(batch, "heuristic", reason, self.t_tasks, instruction=task, demos=out.demos[task])
                )
            else:
                passed.append(task)
        verdicts = {}
        for v in self.novelty.check(passed, add=False):
            verdicts[v.text] = v
            if v.kept:
                out.accepted_tasks.append(v.text)
            else:
                out.rejects.append(
                    self._reject(
                        batch,
                        "novelty",
                        f"ROUGE-L above {c.rouge_threshold}",
                        self.t_tasks,
                        instruction=v.text,
                        novelty_rouge_l=v.max_score,
                        novelty_neighbors=v.neighbors,
                        demos=out.demos[v.text],
                        detail=f"most similar ({v.max_score:.3f}): {v.neighbors[0] if v.neighbors else ''}",
                    )
                )

        labels = self._classify(batch, out)
        self._instances(batch, labels, verdicts, out)
        return out

    def _parse_replies(
        self, batch: int, requests: Sequence[ChatRequest], replies: Sequence[Completion], out: BatchResult
    ) -> list[str]:
        candidates: list[str] = []
        for request, reply in zip(requests, replies, strict=True):
            if reply.finish_reason == "error":
                out.rejects.append(
                    self._reject(batch, "engine", "engine error", self.t_tasks, detail=reply.error or "")
                )
                continue
            tasks = parse_task_list((request.prefill or "").rsplit("\n", 1)[-1] + reply.text)
            demos = self.demo_refs(request)
            if not tasks:
                out.rejects.append(
                    self._reject(
                        batch, "parse", "no numbered tasks in reply", self.t_tasks, raw=reply.text, demos=demos
                    )
                )
                continue
            if reply.finish_reason == "length":
                # The reference code drops a reply cut off at the token limit; `last_task` keeps
                # all but its unfinished last task.
                cut = tasks if self.config.length_cut == "reply" else [tasks[-1]]
                for task in cut:
                    out.rejects.append(
                        self._reject(
                            batch,
                            "parse",
                            "cut off at the token limit",
                            self.t_tasks,
                            instruction=task,
                            raw=reply.text,
                            demos=demos,
                        )
                    )
                tasks = tasks[: len(tasks) - len(cut)]
            tasks = tasks[: self.config.max_new_tasks_per_prompt]
            for task in tasks:
                out.demos.setdefault(task, demos)
            candidates.extend(tasks)
        return candidates

    def _classify(self, batch: int, out: BatchResult) -> dict[str, bool]:
        """Each accepted task's verdict. A reply that is not an exact yes makes a generation task,
        as in the reference code; only a failed engine call is a reject."""
        tasks = out.accepted_tasks
        replies = self.engine.chat([self.classify_request(t, batch, i) for i, t in enumerate(tasks)])
        labels = {}
        for task, reply in zip(tasks, replies, strict=True):
            if reply.finish_reason == "error":
                out.rejects.append(
                    self._reject(
                        batch,
                        "classification",
                        "engine error",
                        self.t_classify,
                        instruction=task,
                        raw=reply.text,
                        detail=reply.error or "",
                        demos=out.demos[task],
                    )
                )
            else:
                labels[task] = parse_is_classification(reply.text, self.config.classify_question)
        return labels

    def _instances(self, batch: int, labels: dict[str, bool], verdicts: dict, out: BatchResult) -> None:
        tasks = list(labels)
        requests = [self.instance_request(t, labels[t], batch, i) for i, t in enumerate(tasks)]
        replies = self.engine.chat(requests)
        for task, request, reply in zip(tasks, requests, replies, strict=True):
            classification = labels[task]
            template = self.t_output_first if classification else self.t_input_first
            v = verdicts[task]
            common = dict(
                instruction=task,
                is_classification=classification,
                novelty_rouge_l=v.max_score,
                novelty_neighbors=v.neighbors,
                demos=out.demos[task],
            )
            if reply.finish_reason == "error":
                out.rejects.append(
                    self._reject(batch, "instance", "engine error", template, detail=reply.error or "", **common)
                )
                continue
            pairs = parse_instances((request.prefill or "") + reply.text, classification)
            if reply.finish_reason == "length" and pairs:
                inp, outp = pairs.pop()
                out.rejects.append(
                    self._reject(
                        batch, "instance", "cut off at the token limit", template, input=inp, output=outp, **common
                    )
                )
            if not pairs:
                out.rejects.append(
                    self._reject(batch, "instance", "no instances in reply", template, raw=reply.text, **common)
                )
                continue
            for (inp, outp), reason in zip(pairs, instance_reasons(pairs, self.config.instances_per_task), strict=True):
                if reason:
                    out.rejects.append(
                        self._reject(batch, "instance", reason, template, input=inp, output=outp, **common)
                    )
                else:
                    out.kept.append(
                        Record(
                            input=inp,
                            output=outp,
                            tags=["self-instruct"],
                            **self.origin.fields(batch, template=template, sampling=request.sampling),
                            **common,  # type: ignore[arg-type]
                        )
                    )


def check_inputs(config: SelfInstructConfig, dataset: str | Path) -> None:
    """Read the seed tasks (before Prefect or a model loads, so a bad file fails at once)."""
    TEMPLATES.load(config.language)  # the language has every prompt
    load_seed_tasks(config.seeds, config.language)
