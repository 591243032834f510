"""What grows with a run lives in mapped files: a column of strings and a table of digests that
read back what was put in, forget a rolled-back tail, and hold nothing per entry in the process."""

from __future__ import annotations

import random
import resource
from collections.abc import Sequence

import numpy as np
import pytest

from synth.filters.dedup import MinHashIndex
from synth.filters.exact_dedup import ExactDedupFilter
from synth.filters.minhash import from_shingles
from synth.filters.spill import KeyTable, Spill, Strings, digests
from synth.schemas import Record
from synth.schemas.curation import MinHashConfig


def texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    pieces = ["", "a", "é", "数据", "🙂", "word ", "\t", "x" * 300]
    return [f"{i}:" + "".join(rng.choice(pieces) for _ in range(rng.randrange(0, 6))) for i in range(n)]


def test_strings_read_back_every_text_across_growth_and_forget_a_tail():
    column, reference = Strings(), []
    for chunk in (texts(1, 1), texts(700, 2), [""] * 5, texts(3000, 3)):
        column.extend(chunk)
        reference.extend(chunk)
    assert isinstance(column, Sequence) and len(column) == len(reference)
    assert list(column) == reference
    assert column[-1] == reference[-1] and column[5:9] == reference[5:9]
    with pytest.raises(IndexError):
        column[len(reference)]
    column.truncate(600)
    column.append("後 the tail")
    assert list(column) == [*reference[:600], "後 the tail"]
    # Sampling from it draws what sampling from the list draws (Self-Instruct's prompts depend on it).
    assert random.Random(7).sample(column, 20) == random.Random(7).sample([*reference[:600], "後 the tail"], 20)


def test_key_table_finds_each_key_by_its_first_row_and_forgets_truncated_ones():
    table = KeyTable()
    words = [f"id-{i}" for i in range(20_000)]
    keys = digests(words)
    table.add(keys[:5000])
    table.add(keys[5000:])
    assert (table.find(keys) == np.arange(len(words))).all()
    assert (table.find(digests(["id-x", "id-20000"])) == -1).all()
    table.add(keys[:3])  # a key added again is found at its first row
    assert table.find(keys[:3]).tolist() == [0, 1, 2]
    table.truncate(1000)
    assert table.find(keys[999:1001]).tolist() == [999, -1]
    # Keys sharing their first word (one probe run) are told apart by the second.
    twins = np.array([[5, 1], [5, 2], [5, 3]], dtype=np.uint64)
    table.add(twins)
    assert table.find(twins).tolist() == [1000, 1001, 1002]
    assert table.find(np.array([[5, 4]], dtype=np.uint64)).tolist() == [-1]
    # Shorter digests are padded, and unequal texts have unequal keys.
    assert digests(["a", "b"], 12)[:, 1].tolist()[0] >> 32 == 0 and len(set(map(bytes, digests(words, 12)))) == len(
        words
    )


def anonymous_bytes() -> int:
    with open("/proc/self/statm") as f:
        fields = f.read().split()
    return (int(fields[1]) - int(fields[2])) * resource.getpagesize()


def test_the_near_dup_index_holds_its_ids_in_files_not_in_the_process(tmp_path):
    config = MinHashConfig()
    index = MinHashIndex(config, Spill(tmp_path))
    chunk = 10_000
    one_each = from_shingles(np.arange(chunk, dtype=np.uint32), np.arange(chunk + 1, dtype=np.int64), config)
    index.add([f"record-{i:08d}-of-a-long-run" for i in range(chunk)], one_each, remember=False)
    before = anonymous_bytes()
    for start in range(chunk, 300_000, chunk):
        index.add([f"record-{i:08d}-of-a-long-run" for i in range(start, start + chunk)], one_each, remember=False)
    grown = anonymous_bytes() - before
    # A list and a set of 290K such ids take about 35 MB; files take them here.
    assert grown < 8 * 2**20, grown
    assert index.contains(["record-00000007-of-a-long-run", "record-00299999-of-a-long-run", "nope"]) == [
        True,
        True,
        False,
    ]
    assert index.ids[123_456] == "record-00123456-of-a-long-run" and len(index.ids) == 300_000


def record(i: int, text: str) -> Record:
    return Record(id=f"r{i}", instruction=text, input="", output="an answer", generator="test")


def test_exact_dedup_keeps_the_first_id_across_batches_and_forgets_a_rolled_back_batch():
    f = ExactDedupFilter()
    first = f.apply([record(0, "Name a colour."), record(1, "name  a COLOUR."), record(2, "Name a fruit.")])
    assert [r.id for r in first.kept] == ["r0", "r2"]
    assert [r.detail for r in first.rejects] == ["same text as r0"]
    f.commit()
    second = f.apply([record(3, "NAME A FRUIT."), record(4, "Name a tree.")])
    assert [r.detail for r in second.rejects] == ["same text as r2"] and [r.id for r in second.kept] == ["r4"]
    f.rollback()
    third = f.apply([record(5, "name a tree."), record(6, "Name a colour.")])
    assert [r.id for r in third.kept] == ["r5"]
    assert [r.detail for r in third.rejects] == ["same text as r0"]
