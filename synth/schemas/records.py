"""Data contracts for what flows through the pipeline: seed tasks, generated records, rejects."""

from __future__ import annotations

import functools
import hashlib
import inspect
import typing
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal, Protocol, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from synth import registry


class Message(BaseModel):
    """One chat turn, in the shape TRL and `datasets` expect."""

    model_config = ConfigDict(frozen=True)

    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True)
class Example:
    """One instruction example in its plain form, as sources, seed pairs and training data are read:
    `output` is empty where the source has none, `system` is a system message for the example
    (training data may carry one), and `id` is the source's id for it, where it has one."""

    instruction: str
    output: str = ""
    input: str = ""
    system: str = ""
    id: str = ""

    @property
    def prompt(self) -> str:
        """The user's message for the example (see `user_prompt`)."""
        return user_prompt(self.instruction, self.input)


class Instance(BaseModel):
    """One input/output example of a task."""

    input: str = ""
    output: str


class SeedTask(BaseModel):
    """A task in the Self-Instruct release format (plain instruction files map onto it too)."""

    id: str
    name: str = ""
    instruction: str = Field(min_length=1)
    instances: list[Instance] = Field(default_factory=list)
    is_classification: bool = False


class Sampling(BaseModel):
    """Sampling parameters as recorded on every record (what produced it)."""

    model_config = ConfigDict(frozen=True)

    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 512
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None


def content_id(instruction: str, input: str, output: str) -> str:
    """Stable id of a record: a hash of its content, so the same example always has the same id."""
    digest = hashlib.sha256("\x1f".join((instruction, input, output)).encode("utf-8"))
    return digest.hexdigest()[:20]


def user_prompt(instruction: str, input: str) -> str:
    """The user's message for an instruction: the instruction, and its input (if any) below it."""
    return instruction if not input else f"{instruction}\n\n{input}"


def to_messages(instruction: str, input: str, output: str) -> list[Message]:
    """The chat form of an (instruction, input, output) example."""
    return [Message(role="user", content=user_prompt(instruction, input)), Message(role="assistant", content=output)]


class Provenance(BaseModel):
    """Where a record came from: enough to reproduce it and to trace its lineage."""

    generator: str
    model: str = ""
    sampling: Sampling | None = None  # how the model sampled the text; None where no model wrote it
    template: str = ""
    template_hash: str = ""
    seed: int = 0
    run_id: str = ""
    batch: int = 0
    # Lineage: evolved records point to their parent and the original instruction.
    parent_id: str | None = None
    root_id: str | None = None
    operation: str | None = None
    round: int | None = None
    # Backtranslation: the document and character span a segment came from.
    source_doc: str | None = None
    source_start: int | None = None
    source_end: int | None = None
    # Imported records: the id the record had in its file (`source_doc` names the file and line).
    source_id: str | None = None
    # The in-context examples the prompt showed (Self-Instruct: the tasks, as "id: snippet").
    demos: list[str] = Field(default_factory=list)


class RunView(Protocol):
    """What a block's card section reads of a run (a `RunInfo`)."""

    run_id: str
    generator: str
    state: dict[str, Any]


def _type_name(annotation: Any) -> str:
    """A block field's type as a card's table cell shows it (no "|", which would split the cell)."""
    kinds = [getattr(a, "__name__", str(a)) for a in typing.get_args(annotation) if a is not type(None)]
    if kinds:
        return " or ".join(kinds) + (", or null" if type(None) in typing.get_args(annotation) else "")
    return getattr(annotation, "__name__", str(annotation))


class Block(BaseModel):
    """A generator's own typed block on its records (and rejects): the fields only it writes, kept
    in one Parquet struct column (`column`). The generator's registry entry names its block
    (`block_path`), which is how a record read back from a shard or a JSON line gets it typed
    again; `Block.of` gives a record's block of that type.

    `legacy` names the fields that shards written before the block existed hold as flat columns of
    the same names: reading such a shard gathers them into the block (`synth.shards.legacy`)."""

    model_config = ConfigDict(extra="forbid")
    column: ClassVar[str]  # the record's key and the shards' column
    title: ClassVar[str] = ""  # the heading of its section on a record's page (default: its column)
    section: ClassVar[bool] = True  # False: the record's page shows it in a place of its own
    legacy: ClassVar[tuple[str, ...]] = ()
    card: ClassVar[str] = ""  # the dataset card's section on it (markdown, from its "## " heading)

    @classmethod
    def card_section(cls, runs: Sequence[RunView]) -> list[str]:
        """The dataset card's section on this block, for a dataset with `runs` of the generators
        that write it: its `card` text where it has one, else its docstring and its fields."""
        if cls.card:
            return ["", *inspect.cleandoc(cls.card).splitlines()]
        lines = ["", f"## {cls.title or cls.column}", ""]
        generators = ", ".join(sorted({f"`{run.generator}`" for run in runs}))
        about = " ".join(inspect.cleandoc(cls.__doc__ or "").split())
        lines += [f"Records of {generators} carry a `{cls.column}` struct.", about, "", "| field | type |", "|---|---|"]
        return lines + [
            f"| `{cls.column}.{name}` | {_type_name(f.annotation)} |" for name, f in cls.model_fields.items()
        ]

    @classmethod
    def of(cls, record: Record) -> Self | None:
        """`record`'s block of this type, or None where it has none."""
        for value in (record.__pydantic_extra__ or {}).values():
            if isinstance(value, cls):
                return value
        return None


@functools.cache
def _load_block(path: str) -> type[Block]:
    block = registry.load(path)
    if not (isinstance(block, type) and issubclass(block, Block)):
        raise TypeError(f"{path}: a registry entry's block_path names a Block, not {block!r}")
    return block


def generator_block(generator: str) -> type[Block] | None:
    """The block a generator's records carry (its registry entry's), or None."""
    entry = registry.GENERATORS.get(generator)
    return _load_block(entry.block_path) if entry is not None and entry.block_path else None


def blocks() -> dict[str, type[Block]]:
    """The typed blocks records may carry, by column, from the registry's entries (table order)."""
    return _blocks(registry.GENERATORS.changes)


@functools.cache
def _blocks(changes: int) -> dict[str, type[Block]]:  # once per state of the registry's table
    return {block.column: block for block in map(_load_block, registry.block_paths())}


class Record(Provenance):
    """A kept instruction-tuning example with its provenance and curation scores.

    Besides its fields a record may carry generators' blocks (`Block`), each under the block's
    column (`unnatural=Unnatural(...)`); a block given as a dict (read back from a shard or a JSON
    line) is typed by the registry entry that names it. Any other unknown name is ignored, as
    pydantic does by default."""

    model_config = ConfigDict(extra="allow")

    id: str = ""
    instruction: str
    input: str = ""
    output: str = ""
    messages: list[Message] = Field(default_factory=list)
    is_classification: bool | None = None
    novelty_rouge_l: float | None = None
    novelty_neighbors: list[str] = Field(default_factory=list)
    judge_score: float | None = None
    judge_rationale: str | None = None
    judge_model: str | None = None
    judge_rubric: str | None = None  # hash of the rubric the judge scored against
    grades: list[float] = Field(default_factory=list)  # self-training: each iteration's grade, M0's first
    language: str | None = None  # detected language of the instruction (ISO 639-1), by the language check
    ability: str | None = None  # the ability the record exercises, by the ability tagger (a taxonomy key)
    tags: list[str] = Field(default_factory=list)
    # Selection scores (synth select): each filled by the scorer that computes it.
    complexity_score: float | None = None  # the instruction's complexity, rated by a model (Deita)
    quality_score: float | None = None  # the response's quality, rated by a model (Deita)
    ifd: float | None = None  # instruction-following difficulty: loss(output | instruction) / loss(output)
    response_tokens: int | None = None  # the response's length in the scoring model's tokens
    selection_method: str | None = None  # the method that selected the record
    selection_rank: int | None = None  # its place in the selection order, from 0
    selection_distance: float | None = None  # cosine distance to the nearest record selected before it
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @model_validator(mode="before")
    @classmethod
    def _typed_blocks(cls, data: Any) -> Any:
        fields = cls.__pydantic_fields__
        if not isinstance(data, dict) or data.keys() <= fields.keys():
            return data
        out, known, extra = dict(data), blocks(), [key for key in data if key not in fields]
        for key in extra:
            value = out.pop(key)
            if isinstance(value, Block):
                if key != value.column:
                    raise ValueError(f"{key}: a {type(value).__name__} block goes under {value.column!r}")
                out[key] = value
            elif key in known:
                out[key] = None if value is None else known[key].model_validate(value)
        return out

    def model_post_init(self, __context: object) -> None:
        if not self.id:
            self.id = content_id(self.instruction, self.input, self.output)
        if not self.messages and self.output:
            self.messages = to_messages(self.instruction, self.input, self.output)


# The reject stages every generator and the curation chain may write, in the order the pipeline
# applies them: those the model's text fails first, then the curation chain's. A generator's own
# stages are in its registry entry (`stages`); `reject_stages` lists them all.
GENERATION_STAGES = ("parse", "heuristic", "novelty", "engine")
CURATION_STAGES = (
    "curation",  # datasets written before self-curation had its own name
    "judge",
    "language",
    "ability",
    "mixture",
    "dedup",
    "decontamination",
    "score",  # a selection scorer could not score the record (its raw reply kept)
    "selection",  # a valid record the selection did not pick for its budget
)


def reject_stages() -> list[str]:
    """Every reject stage, in pipeline order: the model text's checks, the generators' own stages
    (registry order), then the curation chain's."""
    return [*GENERATION_STAGES, *registry.stages(), *CURATION_STAGES]


@functools.cache
def _registered_stages(changes: int) -> frozenset[str]:  # once per state of the registry's table
    return frozenset(registry.stages())


def _known_stage(stage: str) -> str:
    shared = stage in GENERATION_STAGES or stage in CURATION_STAGES
    if shared or stage in _registered_stages(registry.GENERATORS.changes):
        return stage
    raise ValueError(f"unknown reject stage {stage!r}; stages: {', '.join(reject_stages())}")


RejectStage = Annotated[str, AfterValidator(_known_stage)]


class Reject(Record):
    """A dropped candidate: the same fields as a record plus why and where it was dropped.

    `raw` keeps the model text the candidate came from when the reason is about that text
    (an unparseable reply, say), so nothing is lost. `phase` tells rejects the generator made while
    generating (its own heuristics, novelty or parse checks) from those of the curation chain,
    whose stages can have the same names.
    """

    instruction: str = ""
    stage: RejectStage
    phase: Literal["generation", "curation"] = "generation"
    reason: str
    detail: str = ""
    raw: str = ""

    def model_post_init(self, __context: object) -> None:
        if not self.id:
            # Where and why it was dropped are part of a reject's identity: two empty documents
            # are two rejects.
            where = "\x1f".join(
                map(str, (self.stage, self.reason, self.source_doc, self.source_start, self.source_end))
            )
            self.id = content_id(self.instruction, self.input, f"{self.output or self.raw}\x1f{where}")


@dataclass
class Outcome:
    """What a step made of its input: the records it kept and the rejects (each with stage and
    reason). Filters return one; a generator's batch result extends it with its own figures."""

    kept: list[Record] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)


ReasonCounts = dict[str, dict[str, int]]  # stage -> reason -> count


def add_counts(into: ReasonCounts, counts: Iterable[tuple[tuple[str, str], int]]) -> ReasonCounts:
    """Add ((stage, reason), n) pairs to the table `into` (changed in place, and returned)."""
    for (stage, reason), n in counts:
        bucket = into.setdefault(stage, {})
        bucket[reason] = bucket.get(reason, 0) + n
    return into


def count_reasons(rejects: Iterable[Reject], into: ReasonCounts | None = None) -> ReasonCounts:
    """Rejects counted by stage, then reason, added to `into` (a new table when None)."""
    return add_counts({} if into is None else into, Counter((r.stage, r.reason) for r in rejects).items())


def flat_counts(table: ReasonCounts) -> Iterable[tuple[tuple[str, str], int]]:
    """The ((stage, reason), n) pairs of a table, to add to another one."""
    return (((stage, reason), n) for stage, reasons in table.items() for reason, n in reasons.items())
