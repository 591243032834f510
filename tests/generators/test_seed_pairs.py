"""Seed pairs for backtranslation's backward prompts: JSONL or a JSON array, unusable pairs skipped."""

from __future__ import annotations

import json

import pytest

from synth.generators.seed_pairs import (
    HAS_INPUT,
    SHORT_OUTPUT,
    UNSEEN_INPUT,
    load_seed_pairs,
    refers_to_unseen_input,
)
from synth.generators.seeds import SeedFileError

LONG = " with enough words in the answer to be worth showing as an example."
ITEMS = [
    {"instruction": "Explain why bread dough rises.", "input": "", "output": "Yeast eats sugar and makes gas" + LONG},
    {"instruction": "Summarize the text.", "input": "Cats sleep a lot.", "output": "Cats sleep most of the day" + LONG},
    {"instruction": "Rewrite the following sentence politely.", "output": "Could you please pass the salt" + LONG},
    {"instruction": "Describe how tides work.", "output": "The moon pulls the oceans twice a day" + LONG},
    {"instruction": "Name a colour.", "output": "Blue."},
]
USABLE = [(ITEMS[0]["instruction"], ITEMS[0]["output"]), (ITEMS[3]["instruction"], ITEMS[3]["output"])]


def test_jsonl_and_json_array_files_give_the_same_usable_pairs(tmp_path):
    jsonl = tmp_path / "seeds.jsonl"
    jsonl.write_text("".join(json.dumps(item) + "\n" for item in ITEMS))
    array = tmp_path / "alpaca.json"
    array.write_text(json.dumps(ITEMS, indent=2))
    for path in (jsonl, array):
        pairs = load_seed_pairs(path)
        assert pairs.pairs == USABLE
        assert pairs.reasons == {HAS_INPUT: 1, UNSEEN_INPUT: 1, SHORT_OUTPUT: 1}
        assert pairs.report() == {"file": str(path), "used": 2, "skipped": dict(pairs.reasons)}
    assert load_seed_pairs(jsonl).digest() == load_seed_pairs(array).digest()


def test_skipped_pairs_name_their_line_and_item(tmp_path):
    array = tmp_path / "alpaca.json"
    array.write_text(json.dumps(ITEMS, indent=2))
    skipped = load_seed_pairs(array).skipped
    second_line = next(i for i, line in enumerate(array.read_text().splitlines(), 1) if "Summarize" in line) - 1
    assert skipped[0] == f"{array}:{second_line}: item 2: {HAS_INPUT}"


def test_built_in_pairs_have_no_input_and_no_reference_to_unseen_text():
    pairs = load_seed_pairs()
    assert pairs.pairs and pairs.reasons[HAS_INPUT] > 0
    assert not any(refers_to_unseen_input(instruction) for instruction, _ in pairs.pairs)


@pytest.mark.parametrize(
    "instruction",
    [
        "Summarize the following article.",
        "Classify the given review as positive or negative.",
        "Rewrite this sentence in the passive voice.",
        "Fix the bug in this Python code.",
        "What is the main idea of the passage?",
        "Answer the question above.",
        "Translate the text below into French.",
        "Correct the grammar of these sentences.",
        "Translate into German:",
    ],
)
def test_references_to_unseen_text_are_flagged(instruction):
    assert refers_to_unseen_input(instruction)


@pytest.mark.parametrize(
    "instruction",
    [
        "Explain why the sky is blue.",
        "Given a list of integers, write a function that returns the largest even one.",
        "Solve this problem and show your reasoning: a train covers 180 km in 2.5 hours.",
        "Name three cities below 100 meters of altitude.",
        "Write a story about a hero following a dream.",
    ],
)
def test_self_contained_instructions_are_not_flagged(instruction):
    assert not refers_to_unseen_input(instruction)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"instruction": "a", "output": "b"}\n{"instruction": ', "bad.json:2: invalid JSON"),
        (b'{"instruction": "a"}\n', "bad.json:1: missing field 'output'"),
        (b'{"instruction": "a", "output": 3}\n', "bad.json:1: field 'output' must be a string"),
        (b'["just text"]\n', "bad.json:1: item 1: expected a JSON object"),
        (b'[\n  {"instruction": "a", "output": "b"},\n  {"instruction": "c"}\n]\n', "bad.json:3: item 2: missing"),
        (b'[\n  {"instruction": "a", "output": "b"}\n  {"instruction": "c"}\n]\n', "bad.json:3: invalid JSON"),
        (b'[\n  {"instruction": "a", "output": "\\ud800"}\n]\n', "bad.json:2: item 1: a JSON string holds an unpaired"),
        (b'{"instruction": "caf\xe9", "output": "b"}\n', "bad.json:1: not UTF-8"),
        (b"\n\n", "bad.json: holds no seed pairs"),
        (b"[]", "bad.json: holds no seed pairs"),
        (b'{"instruction": "Summarize this.", "output": "b"}\n', "bad.json: no usable seed pairs: all 1 skipped"),
    ],
)
def test_bad_seed_files_name_the_file_and_line(tmp_path, content, expected):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(SeedFileError) as e:
        load_seed_pairs(path)
    assert str(e.value).startswith(str(path)) and expected in str(e.value)
    assert "\n" not in str(e.value)


def test_a_byte_order_mark_is_not_an_error(tmp_path):
    path = tmp_path / "seeds.jsonl"
    path.write_bytes("\ufeff".encode() + json.dumps(ITEMS[0]).encode() + b"\n")
    assert load_seed_pairs(path).pairs == USABLE[:1]
