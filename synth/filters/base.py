"""The filter contract: a batch of records in, the kept ones and the rejects (with stage and reason) out.

Filters chain in a configured order, cheap first; the chain counts rejects per stage and reason.

Filters that remember what they kept (dedup indexes, the novelty pool) stage it: what a batch added
becomes permanent with `commit()` once the batch is in the dataset, and `rollback()` forgets it when
the batch could not be committed, so a retried or resumed batch starts from the committed state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from synth.schemas import Outcome, Record, Reject
from synth.schemas.records import count_reasons

_NOT_COPIED = {"id", "messages", "created_at"}


class Filter(Protocol):
    """Keeps or drops each record of a batch; a dropped record becomes a reject with a reason."""

    stage: str

    def apply(self, records: Sequence[Record]) -> Outcome: ...


class Stateful(Protocol):
    """A filter whose `apply` remembers kept records until they are committed or rolled back."""

    def commit(self) -> None: ...

    def rollback(self) -> None: ...


def reject(record: Record, stage: str, reason: str, detail: str = "", **fields: object) -> Reject:
    """`record` as a reject of the curation chain's `stage`, keeping all its content and provenance."""
    data = record.model_dump(exclude=_NOT_COPIED)
    data.update(fields)
    return Reject(**data, stage=stage, phase="curation", reason=reason, detail=detail)  # type: ignore[arg-type]


@dataclass
class ChainResult(Outcome):
    counts: dict[str, dict[str, int]] = field(default_factory=dict)


RECORD_RULE_STAGES = frozenset({"heuristic", "language", "decontamination"})


class FilterChain:
    """Filters applied in order; each sees only what the ones before it kept."""

    def __init__(self, filters: Sequence[Filter]) -> None:
        self.filters = list(filters)

    def apply(self, records: Sequence[Record]) -> ChainResult:
        kept = list(records)
        rejects: list[Reject] = []
        for f in self.filters:
            if not kept:
                break
            result = f.apply(kept)
            kept = result.kept
            rejects.extend(result.rejects)
        return ChainResult(kept, rejects, count_reasons(rejects))

    def rules(self) -> FilterChain:
        """The chain's record rules alone: filters that judge a record by its own text and keep no
        state (heuristics, language, decontamination), so applying them twice gives the same
        answer and changes nothing. A generator that builds on its own records within a batch
        (Evol-Instruct's rounds) screens each round with these, before its records are built on."""
        return FilterChain([f for f in self.filters if getattr(f, "stage", "") in RECORD_RULE_STAGES])

    def commit(self) -> None:
        """The last applied batches are in the dataset: what the filters staged is now theirs."""
        for f in self.filters:
            if hasattr(f, "commit"):
                f.commit()

    def rollback(self) -> None:
        """The last applied batches were not committed: filters forget what they staged."""
        for f in reversed(self.filters):
            if hasattr(f, "rollback"):
                f.rollback()
