"""The typed shapes of a run's bookkeeping: the state a run keeps in the manifest to resume, and the
summary a finished run returns (what the CLI prints, a flow returns and `--json` writes).

Both stay plain JSON (the manifest stores the state as it is; a summary is a dict a notebook or a
Prefect result reads by key), so they are `TypedDict`s: mypy checks every key a job reads or
writes, and `check_state` validates a state read back from disk before a run resumes on it. A
generator's job declares its own state and summary next to it, extending these.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, NotRequired, TypeVar, cast

from pydantic import TypeAdapter, ValidationError
from typing_extensions import TypedDict

from synth.schemas.records import ReasonCounts

if TYPE_CHECKING:
    from synth.schemas.manifest import RunInfo


class TokenCounts(TypedDict):
    """Tokens spent by one kind of request (prompt and completion)."""

    prompt: int
    completion: int


Tokens = dict[str, TokenCounts]  # request tag -> its tokens


class RunState(TypedDict, total=False):
    """What every run keeps in its manifest state, whatever its generator: the tokens its batches
    used (the runner adds each batch's when it commits) and, on Ray, how many batches each worker
    made. A job's state extends this with what it needs to resume."""

    tokens: Tokens
    workers: dict[str, int]


class EngineUse(TypedDict):
    """How much of a session's batch loop the engine spent serving calls."""

    busy_seconds: float
    wall_seconds: float
    busy_share: float
    idle_seconds_per_batch: float
    pipelined: bool


class RunSummary(TypedDict):
    """What a finished run did. A job adds its own figures in a summary type of its own that
    extends this one."""

    run_id: str
    generator: str
    dataset: str
    kept: int
    rejected: int
    batches: int
    rejects_by_reason: ReasonCounts
    tokens: Tokens
    reached_target: bool
    engine: NotRequired[EngineUse]


class TargetSummary(RunSummary):
    """The summary of a run towards a number of kept records: why it stopped, in words."""

    stopped: str


S = TypeVar("S", bound=RunState)


def state_of(info: RunInfo, shape: type[S]) -> S:
    """The committed state of the run `info` as its job's state type `shape` (a `RunState`): what
    the job folded into it, checked against `shape` when the run started (`check_state`)."""
    return cast(S, info.state)


class StateError(ValueError):
    """A run's state in the manifest does not have the shape its job reads (a hand-edited or
    damaged manifest): the run is not resumed on it."""


@functools.cache
def _adapter(shape: Any) -> TypeAdapter[Any]:
    return TypeAdapter(shape)


def check_state(shape: Any, state: dict[str, Any], where: str) -> None:
    """Raise `StateError` (naming `where`: the manifest and the run) unless `state` fits `shape`, a
    `RunState` type."""
    try:
        _adapter(shape).validate_python(state, strict=False)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'state'}: {err['msg']}" for err in e.errors())
        raise StateError(f"{where}: the run's state cannot be resumed ({problems}); nothing was written") from None
