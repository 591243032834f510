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

import hashlib
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from synth.engines import ChatRequest, Completion, Engine
from synth.filters import InstructionHeuristics, RougeNoveltyIndex
from synth.filters.heuristics import NON_TEXT_KEYWORDS, SELF_INSTRUCT_KEYWORDS
from synth.filters.judge import defuse
from synth.filters.novelty import neighbor_ref
from synth.generators.seeds import MAX_SEED_CHARS, seed_chars
from synth.generators.templates import Template, load_template
from synth.schemas import Message, Record, Reject, Sampling, SeedTask, SelfInstructConfig

GENERATOR = "self_instruct"
_TASK_LINE = re.compile(r"^\s*[*#>\-\s]*(?:task\s*)?(\d{1,3})\s*[:.)]\s*(.*)$", re.IGNORECASE)
_EXAMPLE_HEAD = re.compile(r"^\s*[*#\s]*example\s*\d*\s*[:.]?\s*[*]*\s*$", re.IGNORECASE | re.MULTILINE)
_FIELD = re.compile(r"^\s*[*\s]*(input|output|class label|label)\s*[*]*\s*:\s*[*]*\s*", re.IGNORECASE | re.MULTILINE)
_NO_INPUT = {"", "none", "n/a", "na", "(none)", "<noinput>", "no input", "(empty)", "empty", "-"}
_INSTANCE_PREFILL = {True: "Example 1\nClass label:", False: "Example 1\nInput:"}
# The paper's prompts let the model decide whether a task needs an input: no "Input:" forced.
_INSTANCE_PREFILL_FREE = {True: "Example 1\nClass label:", False: "Example 1\n"}
_NEW_TASK = re.compile(r"^\s*task\s*\d*\s*:", re.IGNORECASE | re.MULTILINE)
_YES_NO = re.compile(r"^\W*(yes|no)\b", re.IGNORECASE)
_OPEN_ENDED_PREFILL = "Open-ended:"
_CLASSIFY_PREFILL = "Is it classification?"
_LABEL_SPLIT = re.compile(r"^\s*[*\s]*class label\s*[*]*\s*:", re.IGNORECASE | re.MULTILINE)


def _listed(task: str) -> str:
    """A task as a numbered list shows it: defused, on one line."""
    return " ".join(defuse(task).split())


def request_seed(*parts: object) -> int:
    """A per-request sampling seed derived from the run seed and the request's place in the run."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def _clean(text: str) -> str:
    return text.strip().strip("*").strip().strip('"').strip()


def parse_task_list(text: str) -> list[str]:
    """New tasks from a reply that continues a numbered list ("Task 9: ...", "9. ...").

    Lines that are not numbered continue the current task until a blank line; text before the
    first numbered line (a preamble) is ignored.
    """
    tasks: list[list[str]] = []
    open_item = False
    for line in text.splitlines():
        if m := _TASK_LINE.match(line):
            tasks.append([m.group(2)])
            open_item = True
        elif not line.strip():
            open_item = False
        elif open_item:
            tasks[-1].append(line.strip())
    return [t for t in (_clean(" ".join(parts)) for parts in tasks) if t]


def parse_is_classification(text: str, question: str = "classification") -> bool | None:
    """The verdict after "Is it classification?" ("yes": a classification task) or, with
    `question="open-ended"`, after "Open-ended:" ("no": a classification task).

    Only a reply whose first word is exactly yes or no counts ("not sure", "nope" do not); anything
    else is None (unparseable), never a guess.
    """
    if m := _YES_NO.match(text):
        return (m.group(1).lower() == "yes") == (question == "classification")
    return None


def _fields(chunk: str) -> dict[str, str]:
    """The `Input:` / `Output:` / `Class label:` fields of one example."""
    found: dict[str, str] = {}
    marks = list(_FIELD.finditer(chunk))
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(chunk)
        key = "label" if m.group(1).lower() in ("class label", "label") else m.group(1).lower()
        found.setdefault(key, chunk[m.end() : end].strip())
    return found


def _examples(text: str) -> list[str]:
    parts = [p for p in _EXAMPLE_HEAD.split(text) if p.strip()]
    return parts or [text]


def _label_blocks(chunk: str) -> list[str]:
    """An output-first example holding several "Class label:" blocks without "Example N" heads
    (as the paper's own prompts write them) split into one block per label."""
    starts = [m.start() for m in _LABEL_SPLIT.finditer(chunk)]
    if len(starts) < 2:
        return [chunk]
    return [chunk[a:b] for a, b in zip(starts, [*starts[1:], len(chunk)], strict=True)]


def _input(value: str) -> str:
    return "" if value.strip().lower() in _NO_INPUT else value.strip()


def parse_instances(text: str, classification: bool) -> list[tuple[str, str]]:
    """(input, output) pairs from an instance-generation reply.

    Input-first replies hold `Input:` then `Output:` per example; a reply without any field markers
    is taken as the output of a task that needs no input. Output-first replies hold
    `Class label:` then `Input:`; the label is the output.
    """
    if m := _NEW_TASK.search(text):
        text = text[: m.start()]
    pairs = []
    chunks = _examples(text)
    if classification:
        chunks = [block for chunk in chunks for block in _label_blocks(chunk)]
    for chunk in chunks:
        f = _fields(chunk)
        if classification:
            if "label" in f and "input" in f:
                pairs.append((_input(f["input"]), _clean(f["label"])))
        elif "output" in f:
            pairs.append((_input(f.get("input", "")), f["output"].strip()))
        elif not f and chunk.strip() and len(_examples(text)) == 1:
            pairs.append(("", chunk.strip()))
    return pairs


@dataclass
class BatchResult:
    kept: list[Record] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
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
        self.machine_tasks: list[str] = []
        keywords = NON_TEXT_KEYWORDS if config.extra_non_text_keywords else SELF_INSTRUCT_KEYWORDS
        self.heuristics = InstructionHeuristics(
            min_words=config.min_words, max_words=config.max_words, keywords=keywords
        )
        self.novelty = RougeNoveltyIndex(threshold=config.rouge_threshold, neighbors_kept=config.neighbors_kept)
        self.novelty.add([s.instruction for s in self.seeds], [s.id for s in self.seeds])
        self.t_tasks = load_template("self_instruct_tasks")
        paper_question = config.classify_question == "classification"
        self.t_classify = load_template("self_instruct_classify" if paper_question else "self_instruct_open_ended")
        self.t_input_first = load_template("self_instruct_instances_input_first")
        self.t_output_first = load_template("self_instruct_instances_output_first")
        self.t_demos = {
            False: load_template("self_instruct_demos_input_first"),
            True: load_template("self_instruct_demos_output_first"),
        }
        self._seed_refs = {_listed(s.instruction): neighbor_ref(s.instruction, s.id) for s in self.seeds}

    def accept(self, machine_tasks: Sequence[str]) -> None:
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
        listed = [m.group(2) for line in (request.prefill or "").splitlines()[:-1] if (m := _TASK_LINE.match(line))]
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
        return Reject(
            generator=GENERATOR,
            model=self.engine.model_name,
            template=template.name,
            template_hash=template.hash,
            seed=self.config.seed,
            run_id=self.run_id,
            batch=batch,
            stage=stage,  # type: ignore[arg-type]
            reason=reason,
            **fields,  # type: ignore[arg-type]
        )

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
                        batch, "novelty", f"ROUGE-L above {c.rouge_threshold}", self.t_tasks,
                        instruction=v.text, novelty_rouge_l=v.max_score, novelty_neighbors=v.neighbors,
                        demos=out.demos[v.text],
                        detail=f"most similar ({v.max_score:.3f}): {v.neighbors[0] if v.neighbors else ''}",
                    )
                )  # fmt: skip

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
                            batch, "parse", "cut off at the token limit", self.t_tasks,
                            instruction=task, raw=reply.text, demos=demos,
                        )
                    )  # fmt: skip
                tasks = tasks[: len(tasks) - len(cut)]
            tasks = tasks[: self.config.max_new_tasks_per_prompt]
            for task in tasks:
                out.demos.setdefault(task, demos)
            candidates.extend(tasks)
        return candidates

    def _classify(self, batch: int, out: BatchResult) -> dict[str, bool]:
        tasks = out.accepted_tasks
        replies = self.engine.chat([self.classify_request(t, batch, i) for i, t in enumerate(tasks)])
        labels = {}
        for task, reply in zip(tasks, replies, strict=True):
            verdict = (
                None
                if reply.finish_reason == "error"
                else parse_is_classification(reply.text, self.config.classify_question)
            )
            if verdict is None:
                reason = "engine error" if reply.finish_reason == "error" else "unparseable verdict"
                out.rejects.append(
                    self._reject(
                        batch,
                        "classification",
                        reason,
                        self.t_classify,
                        instruction=task,
                        raw=reply.text,
                        detail=reply.error or "",
                        demos=out.demos[task],
                    )
                )
            else:
                labels[task] = verdict
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
                instruction=task, is_classification=classification,
                novelty_rouge_l=v.max_score, novelty_neighbors=v.neighbors, demos=out.demos[task],
            )  # fmt: skip
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
                            generator=GENERATOR,
                            model=self.engine.model_name,
                            sampling=request.sampling,
                            template=template.name,
                            template_hash=template.hash,
                            seed=self.config.seed,
                            run_id=self.run_id,
                            batch=batch,
                            input=inp,
                            output=outp,
                            tags=["self-instruct"],
                            **common,  # type: ignore[arg-type]
                        )
                    )


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def instance_reasons(pairs: Sequence[tuple[str, str]], limit: int) -> list[str | None]:
    """Why each (input, output) instance of one task is dropped, or None to keep it.

    The reference code's rules: an empty output; an output equal to the input; an input or output
    ending with a colon (an unfinished generation); when one non-empty input is given different
    outputs, every instance of the task goes (a task without input may have several outputs); an
    exact repeat of an earlier instance; and at most `limit` instances (the first ones) per task.
    """
    outputs_by_input: dict[str, set[str]] = {}
    for inp, outp in pairs:
        outputs_by_input.setdefault(_norm(inp), set()).add(_norm(outp))
    conflict = any(inp and len(outs) > 1 for inp, outs in outputs_by_input.items())
    reasons: list[str | None] = []
    seen: set[tuple[str, str]] = set()
    kept = 0
    for inp, outp in pairs:
        key = (_norm(inp), _norm(outp))
        if not outp.strip():
            reasons.append("empty output")
        elif key[0] and key[0] == key[1]:
            reasons.append("output equals input")
        elif inp.strip().endswith(":") or outp.strip().endswith(":"):
            reasons.append("ends with a colon (unfinished)")
        elif conflict:
            reasons.append("conflicting outputs for one input")
        elif key in seen:
            reasons.append("duplicate instance")
        elif kept >= limit:
            reasons.append("over the per-task instance limit")
        else:
            kept += 1
            reasons.append(None)
        seen.add(key)
    return reasons
