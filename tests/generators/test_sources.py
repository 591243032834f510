"""Instruction sources: datasets, JSONL, JSON arrays (Alpaca), Parquet and seed files; errors name
the file and the line or item."""

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
    items = load_instructions(parquet)
    # A repeat without an id is kept under an id of its own: nothing is collapsed silently.
    assert [i.instruction for i in items] == ["One", "Two", "One"]
    assert items[2].id == f"{items[0].id}-2"


def test_seed_file_in_release_format_is_a_source():
    from synth.generators.seeds import DEFAULT_SEEDS, load_seed_tasks

    items, tasks = load_instructions(DEFAULT_SEEDS), load_seed_tasks()
    assert [i.instruction for i in items] == [t.instruction for t in tasks]
    # A task's first instance is the example's input and output.
    assert [(i.input, i.output) for i in items] == [(t.instances[0].input, t.instances[0].output) for t in tasks]


ALPACA = [
    {"instruction": "Give three tips for staying healthy.", "input": "", "output": "1. Eat well. 2. Move. 3. Sleep."},
    {"instruction": "Sort the numbers.", "input": "5, 3, 9", "output": "3, 5, 9"},
    {"instruction": "Name a colour."},
]


def test_a_json_array_in_the_alpaca_format_loads_with_input_and_output(tmp_path):
    path = tmp_path / "alpaca_data.json"
    path.write_text(json.dumps(ALPACA, indent=4), encoding="utf-8")
    items = load_instructions(path)
    assert [(i.instruction, i.input, i.output) for i in items] == [
        ("Give three tips for staying healthy.", "", "1. Eat well. 2. Move. 3. Sleep."),
        ("Sort the numbers.", "5, 3, 9", "3, 5, 9"),
        ("Name a colour.", "", ""),
    ]
    assert len({i.id for i in items}) == 3
    # The same examples as JSON Lines, in a .json or .jsonl file, give the same items.
    for name in ("lines.json", "lines.jsonl"):
        lines = tmp_path / name
        lines.write_text("\n".join(json.dumps(x) for x in ALPACA), encoding="utf-8")
        assert load_instructions(lines) == items


def test_jsonl_and_parquet_keep_an_output_column(tmp_path):
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text(json.dumps({"instruction": "Add", "input": "1 2", "output": "3"}) + "\n")
    assert load_instructions(jsonl)[0].output == "3"
    parquet = tmp_path / "a.parquet"
    pl.DataFrame({"instruction": ["One", "Two"], "output": ["1", None]}).write_parquet(parquet)
    assert [i.output for i in load_instructions(parquet)] == ["1", ""]


def test_a_dataset_directory_gives_its_records_outputs(small_dataset):
    from synth.shards import scan

    kept = scan(small_dataset).select("output").collect()["output"].to_list()
    assert [i.output for i in load_instructions(small_dataset)] == kept


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'[{"instruction": "ok"},\n {"instruction": "ok2",}]', ":2: invalid JSON"),
        (b'[{"instruction": "ok"}, {"prompt": "x"}]', ": item 1: no 'instruction' text field"),
        (b'[{"instruction": "ok"}, {"instruction": "b", "output": 3}]', ": item 1: field 'output' is not text"),
        (b'[{"instruction": "ok"}, {"instruction": "b", "input": ["x"]}]', ": item 1: field 'input' is not text"),
        (b'[{"instruction": "a"}, 5]', ": item 1: no 'instruction'"),
        (b'[{"instruction": "\\ud800"}]', ": item 0: a JSON string holds an unpaired surrogate"),
        (b'[{"instruction": "\xe9"}]', ":1: not UTF-8"),
        (b"[]", ": no instructions"),
    ],
)
def test_bad_json_arrays_name_the_file_and_the_item(tmp_path, content, message):
    path = tmp_path / "alpaca.json"
    path.write_bytes(content)
    with pytest.raises(SourceError) as e:
        load_instructions(path)
    assert str(e.value).startswith(str(path)) and message in str(e.value)


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


# -- ids, empty sources, control characters ------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "write", "first", "second"),
    [
        (
            "s.jsonl",
            lambda p: p.write_text(
                "\n".join(
                    json.dumps({"id": i, "instruction": t}) for i, t in [("a", "One"), ("b", "Two"), ("a", "Three")]
                )
            ),
            ":1",
            ":3",
        ),
        (
            "s.json",
            lambda p: p.write_text(json.dumps([{"id": 7, "instruction": "One"}, {"id": "7", "instruction": "Two"}])),
            ": item 0",
            ": item 1",
        ),
        (
            "s.parquet",
            lambda p: pl.DataFrame({"id": ["x", "x"], "instruction": ["One", "Two"]}).write_parquet(p),
            ": row 1",
            ": row 2",
        ),
    ],
)
def test_two_examples_with_the_same_id_are_refused_naming_both(tmp_path, name, write, first, second):
    path = tmp_path / name
    write(path)
    with pytest.raises(SourceError) as e:
        load_instructions(path)
    rid = {"s.jsonl": "a", "s.json": "7", "s.parquet": "x"}[name]
    assert str(e.value) == f"{path}{second}: id {rid!r} is already the id of {path}{first}; ids must be unique"


def test_an_empty_source_says_what_it_holds(tmp_path, caplog):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(SourceError) as e:
        load_instructions(empty)
    assert str(e.value) == f"{empty}: no instructions in the source: no examples"
    blank = tmp_path / "blank.json"
    blank.write_text(json.dumps([{"instruction": " "}, {"instruction": ""}]))
    with pytest.raises(SourceError) as e:
        load_instructions(blank)
    assert str(e.value) == (
        f"{blank}: no instructions in the source: 2 example(s), none with an instruction (first: {blank}: item 0)"
    )
    some = tmp_path / "some.jsonl"
    some.write_text(json.dumps({"instruction": ""}) + "\n" + json.dumps({"instruction": "Go."}) + "\n")
    assert [i.instruction for i in load_instructions(some)] == ["Go."]
    assert caplog.messages[-1] == f"{some}: skipped 1 example(s) with an empty instruction; first: {some}:1"


@pytest.mark.parametrize(
    ("name", "write", "error"),
    [
        ("s.txt", lambda p: p.write_bytes(b"Fine.\n\x1b[31mRed\n"), ":2: control character U+001B at column 1"),
        (
            "s.jsonl",
            lambda p: p.write_bytes(b'"Fine."\n{"instruction": "x", "input": "\\u0008back"}\n'),
            ":2: a JSON string holds a control character U+0008 (escaped as \\u0008)",
        ),
        (
            "s.json",
            lambda p: p.write_text(json.dumps([{"instruction": "x"}, {"instruction": "y", "output": "\u009b2J"}])),
            ": item 1: a JSON string holds a control character U+009B (escaped as \\u009b)",
        ),
        (
            "s.parquet",
            lambda p: pl.DataFrame({"instruction": ["x", "y\x00"]}).write_parquet(p),
            ": row 2: column 'instruction' holds a control character U+0000 at column 2",
        ),
    ],
)
def test_control_characters_in_a_source_are_refused_naming_the_place(tmp_path, name, write, error):
    path = tmp_path / name
    write(path)
    with pytest.raises(SourceError) as e:
        load_instructions(path)
    assert str(e.value) == f"{path}{error}; only text, tabs and line breaks are read"


def test_a_byte_order_mark_opening_a_source_is_dropped(tmp_path):
    for name in ("s.jsonl", "s.txt"):
        path = tmp_path / name
        content = json.dumps("First.") if name == "s.jsonl" else "First."
        path.write_bytes(b"\xef\xbb\xbf" + content.encode() + b"\r\n")
        assert [i.instruction for i in load_instructions(path)] == ["First."]
