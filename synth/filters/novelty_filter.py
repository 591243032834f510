"""ROUGE-L novelty as a filter of its own: instructions too close to a reference pool are dropped."""

from __future__ import annotations

from collections.abc import Sequence

from synth.filters.base import reject
from synth.filters.novelty import RougeNoveltyIndex
from synth.schemas import Outcome, Record


class NoveltyFilter:
    """Keeps a record when its instruction's ROUGE-L F1 against every pool instruction (and every
    instruction kept before it) is at most `threshold`; kept instructions join the pool.

    A record's `novelty_neighbors` name its nearest pool instructions by reference (an id and a
    short snippet, see `neighbor_ref`): `pool_ids`, when given, are the ids used, else content
    hashes. The pool is searched with pruning: the neighbours scoring above the threshold are
    exact, the others come from the pool instructions the prefix filter examined (see
    `synth.filters.novelty`)."""

    stage = "novelty"

    def __init__(
        self, pool: Sequence[str], threshold: float = 0.7, pool_ids: Sequence[str | None] | None = None
    ) -> None:
        self.index = RougeNoveltyIndex(threshold=threshold)
        self.add_pool(pool, pool_ids)

    def add_pool(self, pool: Sequence[str], pool_ids: Sequence[str | None] | None = None) -> None:
        """More reference texts (a dataset's, a shard at a time); they are not candidates."""
        self.index.add(pool, pool_ids)
        self._committed = len(self.index)

    def commit(self) -> None:
        self._committed = len(self.index)

    def rollback(self) -> None:
        self.index.truncate(self._committed)

    def apply(self, records: Sequence[Record]) -> Outcome:
        result = Outcome()
        verdicts = self.index.check([r.instruction for r in records])
        for r, v in zip(records, verdicts, strict=True):
            scored = r.model_copy(update={"novelty_rouge_l": v.max_score, "novelty_neighbors": v.neighbors})
            if v.kept:
                result.kept.append(scored)
            else:
                result.rejects.append(
                    reject(
                        scored,
                        self.stage,
                        f"ROUGE-L above {self.index.threshold}",
                        detail=f"most similar ({v.max_score:.3f}): {v.neighbors[0] if v.neighbors else ''}",
                    )
                )
        return result
