"""A dataset written before the preference pair's and code's fields moved into their blocks
(`tests/fixtures/datasets/before-blocks`, written by the writer of that time, with flat `chosen`,
`rejected`..., `tests` and `execution` columns) reads as one written after: every reader gathers the
flat columns into the block, and nothing is lost."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pytest

from synth.schemas import Record
from synth.schemas.code import Code
from synth.schemas.manifest import BLOCKS_LAYOUT
from synth.schemas.preferences import Preferences
from synth.shards import DatasetWriter, legacy, read_manifest, scan, shard_schema
from synth.shards.export import export_frame
from synth.shards.legacy import file_columns
from synth.shards.read import kept_frames

BEFORE = Path(__file__).parent.parent / "fixtures" / "datasets" / "before-blocks"
PAIR = {
    "chosen": "Blue.",
    "rejected": "Colour is a word.",
    "chosen_score": 4.5,
    "rejected_score": 1.5,
    "chosen_rationale": "Answers it.",
    "rejected_rationale": "Names none.",
    "chosen_model": "model-a",
    "rejected_model": "model-b",
}


@pytest.fixture
def before(tmp_path) -> Path:
    path = tmp_path / "before"
    shutil.copytree(BEFORE, path)
    (shard,) = [s for s in read_manifest(path).shards if s.kind == "kept"]
    assert {"chosen", "tests"} <= file_columns(path / shard.path) and "preferences" not in file_columns(
        path / shard.path
    )
    return path


def test_scan_gathers_the_flat_columns_into_their_blocks(before):
    kept = scan(before).collect()
    assert kept.schema == shard_schema("kept")
    by_generator = {row["generator"]: row for row in kept.iter_rows(named=True)}
    assert by_generator["preferences"]["preferences"] == PAIR
    assert by_generator["code"]["code"] == {"tests": "assert double(4) == 8", "execution": "passed"}
    assert by_generator["self_instruct"]["preferences"] is None and by_generator["self_instruct"]["code"] is None
    rejects = {row["stage"]: row for row in scan(before, "rejects").collect().iter_rows(named=True)}
    assert rejects["preference"]["preferences"]["chosen_score"] == 3.0
    assert rejects["execution"]["code"] == {"tests": "assert half(4) == 2", "execution": "assertion"}


def test_records_read_shard_by_shard_get_their_blocks_typed(before):
    (frame,) = kept_frames(before)
    records = {r.generator: r for r in (Record.model_validate(row) for row in frame.iter_rows(named=True))}
    assert Preferences.of(records["preferences"]) == Preferences(**PAIR)
    assert Code.of(records["code"]) == Code(tests="assert double(4) == 8", execution="passed")
    assert Preferences.of(records["self_instruct"]) is None
    (texts,) = kept_frames(before, ["id", "instruction"])
    assert texts.columns == ["id", "instruction"] and texts.height == 3


def test_the_dpo_export_still_finds_the_pair(before):
    pairs = export_frame(before, "dpo")
    assert pairs.height == 1
    assert pairs["chosen"].to_list() == [[{"role": "assistant", "content": "Blue."}]]


def test_shards_of_both_layouts_read_together_in_manifest_order(before, monkeypatch):
    new = Record(
        generator="preferences",
        instruction="Name a shape.",
        output="Square.",
        run_id="new-run",
        preferences=Preferences(chosen="Square.", rejected="Red.", chosen_score=5.0, rejected_score=1.0),
    )
    with DatasetWriter(before) as writer:
        writer.commit_batch("legacy-run", 1, [new], [])
    layouts = {s.batch: s.layout for s in read_manifest(before).shards if s.kind == "kept"}
    assert layouts == {0: 1, 1: BLOCKS_LAYOUT}
    # Only the shard listed before the layout field has its footer read: a dataset of many new
    # shards costs no file opening beyond the scan itself.
    footers: list[str] = []
    monkeypatch.setattr(legacy, "file_columns", lambda path: footers.append(Path(path).name) or file_columns(path))
    kept = scan(before).collect()
    assert footers == ["legacy-run-b00000-000.parquet"]
    assert kept["instruction"].to_list() == ["Name a colour.", "Write double.", "Say hi.", "Name a shape."]
    chosen = kept.select(pl.col("preferences").struct.field("chosen"))["chosen"].to_list()
    assert chosen == ["Blue.", None, None, "Square."]
