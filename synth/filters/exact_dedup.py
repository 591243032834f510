"""Exact-duplicate removal against the whole dataset: the normalized text (case and whitespace
folded) of every kept record already in the dataset's shards, and of the batch so far."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from synth.filters.base import reject
from synth.filters.spill import KeyTable, Spill, Strings, digests
from synth.schemas import Outcome, Record
from synth.shards.layout import is_dataset
from synth.shards.read import kept_frames

# Bytes of the BLAKE2b digest a normalized text is known by.
KEY_BYTES = 12


def normalized_text(instruction: str, input: str, output: str) -> str:
    return "\x1f".join(" ".join(part.lower().split()) for part in (instruction, input, output))


class ExactDedupFilter:
    """Drops records whose normalized text (case and whitespace folded) is already in the dataset
    or earlier in the batch. The texts' digests and the id of the first record of each live in
    mapped files (`Spill`): disk, not memory, grows with the dataset."""

    stage = "dedup"

    def __init__(self, dataset: str | Path | None = None, spill: Spill | None = None) -> None:
        spill = spill or Spill()
        self.keys = KeyTable(spill)
        self.first = Strings(spill)  # the id of the record each key was first seen in, row for row
        self._committed = 0
        if is_dataset(dataset):
            # A shard at a time: memory holds one shard's keys, never the dataset's text.
            for frame in kept_frames(Path(dataset), ["id", "instruction", "input", "output"]):
                self._add_new(frame["id"].to_list(), [normalized_text(*row) for row in frame.drop("id").iter_rows()])
            self._committed = len(self.keys)

    def _add_new(self, ids: Sequence[str], texts: Sequence[str]) -> list[str | None]:
        """Index the texts not known yet; for each, the id it duplicates, or None if it was new."""
        keys = digests(texts, KEY_BYTES)
        found = self.keys.find(keys)
        firsts: list[str | None] = []
        batch: dict[bytes, str] = {}
        new = []
        for k, (rid, row) in enumerate(zip(ids, found.tolist(), strict=True)):
            key = keys[k].tobytes()
            first = self.first[row] if row >= 0 else batch.get(key)
            firsts.append(first)
            if first is None:
                batch[key] = rid
                new.append(k)
        self.keys.add(keys[new])
        self.first.extend(ids[k] for k in new)
        return firsts

    def apply(self, records: Sequence[Record]) -> Outcome:
        result = Outcome()
        firsts = self._add_new(
            [r.id for r in records], [normalized_text(r.instruction, r.input, r.output) for r in records]
        )
        for r, first in zip(records, firsts, strict=True):
            if first is not None:
                result.rejects.append(reject(r, self.stage, "exact duplicate", detail=f"same text as {first}"))
            else:
                result.kept.append(r)
        return result

    def commit(self) -> None:
        self._committed = len(self.keys)

    def rollback(self) -> None:
        self.keys.truncate(self._committed)
        self.first.truncate(self._committed)
