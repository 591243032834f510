"""Reading training data: a dataset's kept records, JSONL and Parquet files, errors naming the file
and line, both directions of a pair, and the data hash."""

from __future__ import annotations

import polars as pl
import pytest

from synth.shards import scan
from synth.training import Example, TrainingDataError, data_hash, load_examples, to_chat
from synth.training.data import examples_from


def test_jsonl_file_gives_its_examples_in_order(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"instruction": "A", "output": "B"}\n\n{"instruction": "C", "input": "D", "output": "E"}\n')
    examples = load_examples(path)
    assert examples.items == [Example("A", "B"), Example("C", "E", "D")]
    assert examples.source == str(path) and examples.skipped == 0


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"instruction": "A", "output": "B"}\n{"instruction": \n', "bad.jsonl:2: invalid JSON"),
        ('{"instruction": "A", "output": "B"}\n{"instruction": "C"}\n', "bad.jsonl:2: field 'output' is missing"),
        ('{"instruction": "A", "output": 3}\n', "bad.jsonl:1: field 'output' is int, expected text"),
        ('["A", "B"]\n', "bad.jsonl:1: expected a JSON object"),
        ("\n", "bad.jsonl: no examples"),
    ],
)
def test_a_bad_jsonl_line_is_named_by_file_and_line(tmp_path, content, expected):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(TrainingDataError, match=expected):
        load_examples(path)


def test_parquet_file_is_read_and_checked_by_row(tmp_path):
    good = tmp_path / "good.parquet"
    pl.DataFrame({"instruction": ["A", "C"], "input": [None, "D"], "output": ["B", "E"]}).write_parquet(good)
    assert load_examples(good).items == [Example("A", "B"), Example("C", "E", "D")]
    bad = tmp_path / "bad.parquet"
    pl.DataFrame({"instruction": ["A", "C"], "output": ["B", ""]}).write_parquet(bad)
    with pytest.raises(TrainingDataError, match=r"bad.parquet: row 2: field 'output' is missing or empty"):
        load_examples(bad)
    pl.DataFrame({"prompt": ["A"]}).write_parquet(bad)
    with pytest.raises(TrainingDataError, match="no 'instruction' column"):
        load_examples(bad)


def test_unknown_paths_and_types_are_refused(tmp_path):
    with pytest.raises(TrainingDataError, match="no such file"):
        load_examples(tmp_path / "missing.jsonl")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(TrainingDataError, match="unknown data type"):
        load_examples(tmp_path / "notes.txt")
    with pytest.raises(TrainingDataError, match="not a dataset"):
        load_examples(tmp_path)


def test_a_dataset_gives_its_kept_records(small_dataset):
    examples = load_examples(small_dataset)
    kept = scan(small_dataset).collect()
    assert len(examples.items) + examples.skipped == kept.height
    assert [e.instruction for e in examples.items] == [
        i for i, o in zip(kept["instruction"], kept["output"], strict=True) if o
    ]


def test_records_in_memory(tmp_path):
    from synth.schemas import Record

    record = Record(generator="test", instruction="A", input="I", output="B")
    examples = examples_from([record, {"instruction": "C", "output": "D"}, Example("E", "F")])
    assert examples.items == [Example("A", "B", "I"), Example("C", "D"), Example("E", "F")]
    with pytest.raises(TrainingDataError, match="records: item 0: not a record"):
        examples_from([42])


def test_directions_swap_instruction_and_output():
    example = Example(instruction="Translate.", input="Hello", output="Bonjour")
    prompt, completion = to_chat(example, "forward")
    assert prompt == [{"role": "user", "content": "Translate.\n\nHello"}]
    assert completion == [{"role": "assistant", "content": "Bonjour"}]
    prompt, completion = to_chat(example, "backward")
    assert prompt == [{"role": "user", "content": "Bonjour"}]
    assert completion == [{"role": "assistant", "content": "Translate.\n\nHello"}]


def test_a_system_message_leads_the_prompt_in_both_directions(tmp_path):
    path = tmp_path / "tagged.jsonl"
    path.write_text('{"instruction": "A", "output": "B", "system": "Answer like an assistant."}\n')
    [example] = load_examples(path).items
    assert example.system == "Answer like an assistant."
    for direction in ("forward", "backward"):
        prompt, _ = to_chat(example, direction)
        assert prompt[0] == {"role": "system", "content": "Answer like an assistant."} and len(prompt) == 2
    assert data_hash([example]) != data_hash([Example("A", "B")])


def test_data_hash_follows_content_and_order():
    a, b = Example("A", "B"), Example("C", "D")
    assert data_hash([a, b]) == data_hash([Example("A", "B"), Example("C", "D")])
    assert data_hash([a, b]) != data_hash([b, a])
    assert data_hash([a]) != data_hash([Example("A", "B", "x")])


def test_json_files_are_json_lines_and_parquet_nulls_are_empty(tmp_path):
    """Training data goes through the instruction sources' reader with its own file types: a .json
    file is JSON Lines (not an Alpaca array), and a null optional Parquet field reads as empty."""
    lines = tmp_path / "d.json"
    lines.write_text('{"instruction": "A", "output": "B"}\n')
    assert load_examples(lines).items == [Example("A", "B")]
    table = tmp_path / "d.parquet"
    pl.DataFrame(
        {"instruction": ["A"], "output": ["B"], "system": [None]}, schema_overrides={"system": pl.String}
    ).write_parquet(table)
    assert load_examples(table).items == [Example("A", "B")]


def test_held_out_removes_the_examples_asking_a_reference_prompt():
    from synth.training.data import Example, Examples, held_out

    data = Examples(
        [
            Example("Name a colour.", "", "Red."),
            Example(" Name a bird. ", "", "Robin."),
            Example("Add 1 and 1.", "", "2"),
        ],
        "d",
    )
    reference = Examples([Example("Name a bird.", "", "Crow."), Example("Spell cat.", "", "c-a-t")], "r")
    left, removed = held_out(data, reference)
    assert removed == 1 and [e.instruction for e in left.items] == ["Name a colour.", "Add 1 and 1."]
