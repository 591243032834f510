"""A generator written the way "Adding a generator" in docs/development.md says: one module (its config,
prompt, job, run id, input check and flow) and one registry entry, nothing else in the project
touched. Tests register it at run time (`ENTRY`) and run it through `synth generate toy`, a recipe
and the Ray runner.

Toy questions: each request asks the model for one question about the config's topic and its
answer ("Q: ... A: ..."); a reply in that form is a record, any other reply a reject of the toy's
own stage ("off-form"). Records and rejects carry the toy's own typed block (`Toy`: the topic and
the question's number), which the shards keep in a `toy` column. The
batches are independent (each request's seed comes from the run seed, the batch and the request),
so runners make them ahead and Ray runs several at once.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, ClassVar, Unpack

from pydantic import BaseModel, ConfigDict, Field

from synth.engines import ChatRequest
from synth.flows.common import Committed
from synth.flows.jobs import Batch, Maker, MergedState, RunContext, Spec
from synth.flows.run import RunOptions, generator_flow, run_job
from synth.registry import Generator
from synth.schemas import DatasetConfig, EngineConfig, Message, Record, Reject, Sampling, run_id
from synth.schemas.records import Block
from synth.schemas.runs import RunState, RunSummary, state_of

GENERATOR = "toy"
PROMPT = "Write one question about {topic} that a curious child might ask, then answer it. Reply as 'Q: ... A: ...'."
_REPLY = re.compile(r"^\s*Q:\s*(?P<q>.+?)\s*A:\s*(?P<a>.+?)\s*$", re.DOTALL)


class Toy(Block):
    """A toy record's own block: what it is about and which question it is."""

    column = "toy"
    title = "Toy question"

    topic: str
    number: int


class ToyConfig(BaseModel):
    """Toy questions: one question and answer about a topic per request."""

    model_config = ConfigDict(extra="forbid")

    topic: str = Field(default="colours", min_length=1, description="What the questions are about.")
    num_records: int = Field(default=6, ge=1, description="Questions to ask for.")
    batch_size: int = Field(default=3, ge=1, description="Requests per batch.")
    seed: int = 0
    language: str = "en"

    def identity(self) -> dict[str, Any]:
        return self.model_dump()


class ToyState(RunState, total=False):
    asked: int


class ToySummary(RunSummary):
    asked: int


@dataclass
class ToyJob(MergedState):
    config: ToyConfig
    run_id: str
    generator: ClassVar[str] = GENERATOR
    independent: ClassVar[bool] = True
    state_type: ClassVar[Any] = ToyState

    @property
    def batches(self) -> int:
        return math.ceil(self.config.num_records / self.config.batch_size)

    def open(self, run: RunContext) -> str:
        return f"toy questions about {self.config.topic} into {run.dataset.path}"

    def plan(self, run: RunContext) -> Any:
        for batch in range(run.info.batches_done, self.batches):
            yield Spec(batch)

    def make(self, maker: Maker, spec: Spec) -> Batch[ToyState]:
        first = spec.batch * self.config.batch_size
        numbers = range(first, min(first + self.config.batch_size, self.config.num_records))
        requests = [
            ChatRequest(
                messages=[Message(role="user", content=PROMPT.format(topic=self.config.topic))],
                sampling=Sampling(temperature=1.0, max_tokens=128, seed=self.config.seed * 100_003 + n),
                tag=GENERATOR,
            )
            for n in numbers
        ]
        kept: list[Record] = []
        rejects: list[Reject] = []
        common = {"generator": GENERATOR, "run_id": self.run_id, "batch": spec.batch, "model": maker.engine.model_name}
        for n, reply in zip(numbers, maker.engine.chat(requests), strict=True):
            found, block = _REPLY.match(reply.text), Toy(topic=self.config.topic, number=n)
            if found is None:
                rejects.append(
                    Reject(**common, seed=n, stage="off-form", reason="not 'Q: ... A: ...'", raw=reply.text, toy=block)
                )
            else:
                kept.append(Record(**common, seed=n, instruction=found["q"], output=found["a"], toy=block))
        return Batch(kept, rejects, {"asked": first + len(numbers)})

    def committed(self, run: RunContext, spec: Spec, batch: Batch[ToyState], result: Committed) -> str:
        return f"{result.kept} questions kept"

    def progress(self, run: RunContext) -> float:
        return run.info.batches_done / self.batches

    def finish(self, run: RunContext, summary: RunSummary) -> ToySummary:
        return {**summary, "asked": state_of(run.info, ToyState).get("asked", 0)}


def check_inputs(config: ToyConfig, out: Any) -> None:
    """Toy questions read no file."""


def run_toy(
    config: ToyConfig, engine: EngineConfig, dataset: DatasetConfig, **options: Unpack[RunOptions]
) -> ToySummary:
    job = ToyJob(config, run_id(GENERATOR, config.identity(), engine.kind, engine.model))
    return run_job(job, engine, dataset, **options)


toy_flow = generator_flow("toy", ToyConfig, run_toy, "Toy questions")

ENTRY = Generator(
    GENERATOR,
    f"{__name__}:ToyConfig",
    f"{__name__}:toy_flow",
    f"{__name__}:check_inputs",
    block_path=f"{__name__}:Toy",
    stages=("off-form",),
)


def reply(request: ChatRequest) -> str:
    """A scripted model for toy questions: one reply in three is not in the asked form."""
    seed = request.sampling.seed if request.sampling and request.sampling.seed is not None else 0
    if seed % 3 == 2:
        return "I would rather talk about something else."
    return f"Q: Why is question {seed} about {request.messages[-1].content.split()[4]}? A: Because of reason {seed}."


def responder() -> Any:
    return reply
