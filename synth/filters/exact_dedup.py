"""Exact-duplicate removal against the whole dataset: the normalized text (case and whitespace
folded) of every kept record already in the dataset's shards, and of the batch so far."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from synth.filters.base import reject
from synth.schemas import Outcome, Record
from synth.shards.layout import is_dataset
from synth.shards.read import kept_frames


def normalized_key(instruction: str, input: str, output: str) -> bytes:
    text = "\x1f".join(" ".join(part.lower().split()) for part in (instruction, input, output))
    return hashlib.blake2b(text.encode(), digest_size=12).digest()


class ExactDedupFilter:
    """Drops records whose normalized text (case and whitespace folded) is already in the dataset
    or earlier in the batch."""

    stage = "dedup"

    def __init__(self, dataset: str | Path | None = None) -> None:
        self.seen: dict[bytes, str] = {}
        self._staged: list[bytes] = []
        if is_dataset(dataset):
            # A shard at a time: memory holds the keys, never the dataset's text.
            for frame in kept_frames(Path(dataset), ["id", "instruction", "input", "output"]):
                for rid, ins, inp, out in frame.iter_rows():
                    self.seen.setdefault(normalized_key(ins, inp, out), rid)

    def apply(self, records: Sequence[Record]) -> Outcome:
        result = Outcome()
        for r in records:
            key = normalized_key(r.instruction, r.input, r.output)
            if (first := self.seen.get(key)) is not None:
                result.rejects.append(reject(r, self.stage, "exact duplicate", detail=f"same text as {first}"))
            else:
                self.seen[key] = r.id
                self._staged.append(key)
                result.kept.append(r)
        return result

    def commit(self) -> None:
        self._staged.clear()

    def rollback(self) -> None:
        for key in self._staged:
            self.seen.pop(key, None)
        self._staged.clear()
