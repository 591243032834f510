"""Instruction sources: datasets, JSONL, Parquet and seed files; errors name the file and line."""

from __future__ import annotations

import json

import polars as pl
import pytest

from synth.generators.sources import SourceError, load_instructions


def test_dataset_directory_gives_its_kept_records_with_their_ids(small_dataset):
    from synth.shards import scan

    items = load_instructions(small_dataset)
    kept = scan(small_dataset).select("id", "instruction").collect()
    assert [(i.id, i.instruction) for i in items] == list(kept.iter_rows())


def test_jsonl_and_parquet_with_optional_input_and_id(tmp_path):
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text(
        json.dumps({"instruction": "Add", "input": "1 2", "id": "x"}) + "\n" + json.dumps("Plain one") + "\n"
    )
    items = load_instructions(jsonl)
    assert (items[0].id, items[0].instruction, items[0].input) == ("x", "Add", "1 2")
    assert items[1].input == "" and items[1].id  # a content id when none is given
    parquet = tmp_path / "a.parquet"
    pl.DataFrame({"instruction": ["One", "Two", "One"]}).write_parquet(parquet)
    assert [i.instruction for i in load_instructions(parquet)] == ["One", "Two"]  # repeats collapse


def test_seed_file_in_release_format_is_a_source():
    from synth.generators.seeds import DEFAULT_SEEDS, load_seed_tasks

    assert [i.instruction for i in load_instructions(DEFAULT_SEEDS)] == [t.instruction for t in load_seed_tasks()]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.jsonl", b"\n", "no instructions"),
        ("bad.jsonl", b'{"instruction": "ok"}\n{oops\n', "bad.jsonl:2: invalid JSON"),
        ("noinst.jsonl", b'{"prompt": "x"}\n', "noinst.jsonl:1: no 'instruction'"),
        ("latin.jsonl", b'{"instruction": "ok"}\n{"instruction": "\xe9"}\n', "latin.jsonl:2: not UTF-8"),
        ("types.jsonl", b'{"instruction": "ok", "input": 3}\n', "types.jsonl:1: field 'input'"),
        ("data.csv", b"a,b\n", "unknown source type"),
    ],
)
def test_bad_sources_are_errors_naming_file_and_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(SourceError) as e:
        load_instructions(path)
    assert str(path) in str(e.value) and message in str(e.value)


def test_parquet_without_an_instruction_column_names_the_columns(tmp_path):
    path = tmp_path / "x.parquet"
    pl.DataFrame({"prompt": ["a"]}).write_parquet(path)
    with pytest.raises(SourceError, match=r"x\.parquet: no 'instruction' column \(columns: prompt\)"):
        load_instructions(path)


def test_directory_without_manifest_and_missing_path(tmp_path):
    with pytest.raises(SourceError, match="not a dataset"):
        load_instructions(tmp_path)
    with pytest.raises(SourceError, match="no such file"):
        load_instructions(tmp_path / "nope.jsonl")
