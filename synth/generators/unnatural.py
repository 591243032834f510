"""Unnatural Instructions (Honovich et al. 2022): new tasks elicited from three demonstrations.

Core generation (paper §2.1): a prompt shows three seed examples of (instruction, input,
constraints), one of the pool's sets of three, the sets taken in turn, and the model continues
with a fourth (nucleus sampling, p = 0.99). Three filters make rejects: a candidate missing a
field (stage `parse`), one whose instruction copies a demonstration's (`novelty`), and one whose
instruction and input were generated before in the batch (`dedup`; across batches the
curation chain's exact and near dedup drop a repeat, whose greedy output repeats too). The output is then written
greedily from instruction, input and constraints; the record's training text is the instruction
and input, the constraints stay in its `unnatural` block.

Expansion (paper §2.2): each kept example's instruction is worded again from two demonstrations,
with a {INPUT} slot where the input goes; the paraphrase, its slot filled with the example's input,
is a record of its own with the same output, linked to its core (`parent_id` and the block).
A paraphrase without exactly one slot is a reject (stage `expansion`).

Inputs: an engine, an `UnnaturalConfig`, the seed sets. Outputs: `Record`s and `Reject`s; nothing
is dropped silently.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from synth.engines import ChatRequest, Engine
from synth.engines.base import Completion
from synth.generators.provenance import Origin, request_seed
from synth.generators.seeds import SeedFileError
from synth.prompts import TemplateSet, defuse
from synth.schemas import Message, Outcome, Record, Reject, Sampling, content_id
from synth.schemas.unnatural import Unnatural, UnnaturalConfig
from synth.shards.files import json_objects

GENERATOR = "unnatural"
CORE, OUTPUT, EXPAND = "unnatural_core", "unnatural_output", "unnatural_expand"  # templates and request tags
TEMPLATES = TemplateSet((CORE, OUTPUT, EXPAND))
SLOT = "{INPUT}"
SET_SIZE = 3  # demonstrations per prompt (the paper's three)

# The field labels of a demonstration and of the model's reply (the templates use the same). Every
# language's prompts keep these English labels, as the other generators' do, so a reply parses the
# same way whatever the prompt's language.
LABELS = {"example": "Example", "instruction": "Instruction:", "input": "Input:", "constraints": "Constraints:"}
FIELDS = ("instruction", "input", "constraints")
SEEDS_DIR = Path(__file__).parent / "seeds"


@dataclass(frozen=True)
class Demo:
    """One seed example: an instruction, its input and the constraints on its output."""

    instruction: str
    input: str
    constraints: str


def default_seed_file(language: str = "en") -> Path:
    """The built-in seed examples of `language` (15, in 5 sets of 3)."""
    return SEEDS_DIR / ("unnatural_seeds.jsonl" if language == "en" else f"{language}_unnatural_seeds.jsonl")


def read_seed_sets(path: str | Path | None = None, language: str = "en") -> list[list[Demo]]:
    """The seed examples of `path` (the built-in ones of `language` when None) in sets of three:
    by their `set` field where every line has one, else three by three in file order. A line may
    also be in the published dataset's form (`instances`, see `released_form`). A problem is a
    `SeedFileError` naming the file and line."""
    file = Path(path) if path is not None else default_seed_file(language)
    if path is None and not file.is_file():
        raise SeedFileError(f"no built-in Unnatural Instructions seeds for language {language!r}; pass --seeds")
    sets: dict[object, list[Demo]] = {}
    lines: dict[object, int] = {}
    count = 0
    for number, found in json_objects(file, SeedFileError, "a JSON object with instruction, input and constraints"):
        data = released_form(found)
        for name in FIELDS:
            if not isinstance(data.get(name), str) or not data[name].strip():
                raise SeedFileError(f"{file}:{number}: missing or empty field {name!r} (a string)")
        key = data.get("set", f"#{count // SET_SIZE}")
        sets.setdefault(key, []).append(Demo(*(data[name].strip() for name in FIELDS)))
        lines[key], count = number, count + 1
    if not sets:
        raise SeedFileError(f"{file}: no seed examples")
    for key, demos in sets.items():
        if len(demos) != SET_SIZE:
            raise SeedFileError(
                f"{file}:{lines[key]}: seed set {key} has {len(demos)} examples; each prompt shows a set of {SET_SIZE}"
            )
    return list(sets.values())


def released_form(data: dict) -> dict:
    """A line in the form of the published dataset (an instruction with a list of `instances`, each
    with its input and constraints) read as a seed example: its first instance's input and
    constraints. Any other line is returned as it is."""
    instances = data.get("instances")
    if "input" in data or not isinstance(instances, list) or not instances or not isinstance(instances[0], dict):
        return data
    return {**data, "input": instances[0].get("input"), "constraints": instances[0].get("constraints")}


def normalized(text: str) -> str:
    return " ".join(text.split()).casefold()


def pair_digest(instruction: str, input: str) -> str:
    """The run-wide key of the duplicate filter: the instruction and input, whitespace and case aside."""
    return hashlib.sha256(f"{normalized(instruction)}\x1f{normalized(input)}".encode()).hexdigest()[:16]


def render_demos(demos: Sequence[Demo]) -> str:
    blocks = []
    for n, demo in enumerate(demos, start=1):
        rows = [f"{LABELS['example']} {n}"]
        rows += [f"{LABELS[name]} {defuse(getattr(demo, name))}" for name in FIELDS]
        blocks.append("\n".join(rows))
    return "\n\n".join(blocks)


def parse_example(reply: str) -> tuple[dict[str, str], list[str]]:
    """The fields of the model's fourth example (its reply continues after the instruction's label),
    and the names of those missing or empty."""
    text = reply.split(f"\n{LABELS['example']} ")[0]
    marks = {name: LABELS[name] for name in FIELDS[1:]}
    found: dict[str, str] = {}
    pattern = "|".join(re.escape(m) for m in marks.values())
    parts = re.split(f"^\\s*({pattern})", text, flags=re.MULTILINE)
    found["instruction"] = parts[0].strip()
    for label, value in zip(parts[1::2], parts[2::2], strict=True):
        name = next(n for n, m in marks.items() if m == label)
        found.setdefault(name, value.strip().split("\n\n")[0].strip())
    return found, [name for name in FIELDS if not found.get(name)]


@dataclass
class Core:
    """A candidate that passed the three filters, on its way to an output and paraphrases."""

    number: int  # the prompt's place in the run
    seed_set: int
    fields: dict[str, str]
    output: str = ""
    cut: bool = False
    id: str = field(default="")


class UnnaturalGenerator:
    """Makes one batch of Unnatural Instructions examples at a time: `count` prompts from the
    run's prompt `first`."""

    def __init__(self, config: UnnaturalConfig, engine: Engine, sets: list[list[Demo]], run_id: str = "") -> None:
        self.config = config
        self.engine = engine
        self.sets = sets
        self.templates = TEMPLATES.load(config.language)
        self.origin = Origin(GENERATOR, run_id, config.seed, engine.model_name)

    def _sampling(self, base: Sampling, *where: object) -> Sampling:
        return Sampling(**base.model_dump(exclude={"seed"}), seed=request_seed(self.config.seed, *where))

    def core_request(self, number: int) -> tuple[int, ChatRequest]:
        """The prompt of the run's `number`th example: the seed set it shows, and the request."""
        set_no = number % len(self.sets)
        prompt = self.templates[CORE].render(examples=render_demos(self.sets[set_no]))
        sampling = self._sampling(self.config.example_sampling, "core", number)
        stop = [f"\n{LABELS['example']} "]
        return set_no, ChatRequest(raw=prompt, sampling=sampling, stop=stop, tag=CORE)

    def run_batch(self, batch: int, first: int, count: int) -> Outcome:
        """The batch's records and rejects. The duplicate filter runs within the batch; across
        batches the curation chain's exact and near dedup remove a repeated instruction and input
        (its greedy output repeats too), so a run keeps no list of keys that grows with it."""
        out, known, cores = Outcome(), set(), []
        numbers = range(first, first + count)
        asked = [self.core_request(n) for n in numbers]
        replies = self.engine.chat([request for _, request in asked])
        for number, (set_no, request), reply in zip(numbers, asked, replies, strict=True):
            core = Core(number, set_no, {})
            if reply.finish_reason == "error":
                out.rejects.append(self._reject(batch, core, "engine", "engine error", reply, request))
                continue
            core.fields, missing = parse_example(reply.text)
            if missing:
                reason = "missing field: " + ", ".join(missing)
                out.rejects.append(self._reject(batch, core, "parse", reason, reply, request))
            elif any(normalized(core.fields["instruction"]) == normalized(d.instruction) for d in self.sets[set_no]):
                out.rejects.append(self._reject(batch, core, "novelty", "copy of a demonstration", reply, request))
            elif (key := pair_digest(core.fields["instruction"], core.fields["input"])) in known:
                out.rejects.append(
                    self._reject(batch, core, "dedup", "duplicate instruction and input", reply, request)
                )
            else:
                known.add(key)
                cores.append(core)
        cores = self._outputs(batch, cores, out)
        for core in cores:
            out.kept.append(self._record(batch, core))
        if self.config.expand:
            self._expand(batch, cores, out)
        return out

    def _outputs(self, batch: int, cores: list[Core], out: Outcome) -> list[Core]:
        """Each candidate's output, written greedily from instruction, input and constraints."""
        requests = [
            ChatRequest(
                messages=[Message(role="user", content=self.templates[OUTPUT].render(**c.fields))],
                sampling=self._sampling(self.config.output_sampling, "output", c.number),
                tag=OUTPUT,
            )
            for c in cores
        ]
        answered = []
        for core, request, reply in zip(cores, requests, self.engine.chat(requests), strict=True):
            if reply.finish_reason == "error":
                out.rejects.append(self._reject(batch, core, "engine", "engine error (output)", reply, request))
            elif not reply.text.strip():
                out.rejects.append(self._reject(batch, core, "parse", "empty output", reply, request))
            else:
                core.output, core.cut = reply.text.strip(), reply.finish_reason == "length"
                core.id = content_id(core.fields["instruction"], core.fields["input"], core.output)
                answered.append(core)
        return answered

    def _expand(self, batch: int, cores: list[Core], out: Outcome) -> None:
        """`paraphrases` rewordings of each core example's instruction, each a record of its own."""
        asked = [(core, n) for core in cores for n in range(1, self.config.paraphrases + 1)]
        requests = [
            ChatRequest(
                raw=self.templates[EXPAND].render(
                    instruction=defuse(c.fields["instruction"]), constraints=defuse(c.fields["constraints"])
                ),
                sampling=self._sampling(self.config.paraphrase_sampling, "paraphrase", c.number, n),
                stop=["\n\n"],
                tag=EXPAND,
            )
            for c, n in asked
        ]
        for (core, n), request, reply in zip(asked, requests, self.engine.chat(requests), strict=True):
            wording = reply.text.strip()
            problem = (
                "engine error"
                if reply.finish_reason == "error"
                else "empty paraphrase"
                if not wording
                else f"not exactly one {SLOT} slot"
                if wording.count(SLOT) != 1
                else ""
            )
            if problem:
                out.rejects.append(
                    cast(Reject, self._paraphrase(batch, core, n, wording, request, Reject, problem, reply))
                )
            else:
                out.kept.append(self._paraphrase(batch, core, n, wording, request, Record))

    def _block(self, core: Core, paraphrase: int = 0, template: str = "") -> Unnatural:
        constraints = core.fields.get("constraints", "")
        return Unnatural(
            constraints=constraints, core_id=core.id, paraphrase=paraphrase, seed_set=core.seed_set, template=template
        )

    def _fields(self, batch: int, template: str, sampling: Sampling | None) -> dict:
        return self.origin.fields(batch, template=self.templates[template], sampling=sampling)

    def _record(self, batch: int, core: Core) -> Record:
        sampling = self._sampling(self.config.example_sampling, "core", core.number)
        return Record(
            id=core.id,
            instruction=core.fields["instruction"],
            input=core.fields["input"],
            output=core.output,
            tags=["unnatural", "core", *(["cut-off"] if core.cut else [])],
            unnatural=self._block(core),
            **self._fields(batch, CORE, sampling),
        )

    def _paraphrase(
        self,
        batch: int,
        core: Core,
        n: int,
        wording: str,
        request: ChatRequest,
        kind: type[Record],
        reason: str = "",
        reply: Completion | None = None,
    ) -> Record:
        """Paraphrase `n` of `core`: a record (its slot filled with the core's input), or a reject."""
        lineage = {"parent_id": core.id, "root_id": core.id, "operation": "paraphrase", "round": n}
        common = {
            "output": core.output,
            "unnatural": self._block(core, n, wording),
            **self._fields(batch, EXPAND, request.sampling),
            **lineage,
        }
        if kind is Reject:
            assert reply is not None
            text = wording or core.fields["instruction"]
            return Reject(
                instruction=text,
                input=core.fields["input"],
                stage="expansion",
                reason=reason,
                detail=reply.error or "",
                raw=reply.text,
                **common,
            )
        filled = wording.replace(SLOT, core.fields["input"])
        return Record(instruction=filled, tags=["unnatural", "paraphrase"], **common)

    def _reject(
        self, batch: int, core: Core, stage: str, reason: str, reply: Completion, request: ChatRequest
    ) -> Reject:
        fields = core.fields
        return Reject(
            instruction=fields.get("instruction", ""),
            input=fields.get("input", ""),
            output=core.output,
            stage=stage,  # type: ignore[arg-type]
            reason=reason,
            detail=reply.error or "",
            raw=reply.text,
            unnatural=self._block(core) if fields.get("constraints") or core.id else None,
            **self._fields(batch, OUTPUT if request.tag == OUTPUT else CORE, request.sampling),
        )


def check_inputs(config: UnnaturalConfig, dataset: str | Path) -> None:
    """Read the seed examples (sets of three, each with instruction, input and constraints)."""
    TEMPLATES.load(config.language)  # the language has every prompt
    read_seed_sets(config.seeds, config.language)
