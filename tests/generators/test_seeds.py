"""Seed files: the release format, plain instruction files, and one-line errors with file and line."""

from __future__ import annotations

import json

import pytest

from synth.generators.seeds import DEFAULT_SEEDS, SeedFileError, load_seed_tasks


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_release_format_is_read_with_instances_and_classification_flag(tmp_path):
    f = write_lines(
        tmp_path / "seeds.jsonl",
        [
            json.dumps({"id": "seed_task_0", "name": "breakfast_suggestion", "instruction": "Suggest a breakfast.",
                        "instances": [{"input": "", "output": "Oatmeal with fruit."}], "is_classification": False}),
            json.dumps({"id": "seed_task_1", "name": "sentiment", "instruction": "Label the sentiment.",
                        "instances": [{"input": "I love it", "output": "Positive"}], "is_classification": True}),
        ],
    )  # fmt: skip
    tasks = load_seed_tasks(f)
    assert [t.id for t in tasks] == ["seed_task_0", "seed_task_1"]
    assert tasks[1].is_classification
    assert tasks[1].instances[0].output == "Positive"


def test_plain_jsonl_and_text_files_become_tasks_with_line_ids(tmp_path):
    jsonl = write_lines(
        tmp_path / "plain.jsonl", [json.dumps({"instruction": "Name a color."}), json.dumps("Count to five.")]
    )
    text = write_lines(tmp_path / "plain.txt", ["Name a color.", "", "Count to five."])
    assert [t.instruction for t in load_seed_tasks(jsonl)] == ["Name a color.", "Count to five."]
    tasks = load_seed_tasks(text)
    assert [t.instruction for t in tasks] == ["Name a color.", "Count to five."]
    assert tasks[1].id == "seed_3"


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (['{"instruction": "ok"}', "{not json"], ":2: invalid JSON"),
        (['{"instruction": "ok"}', '{"name": "x"}'], ":2: missing field 'instruction'"),
        (['{"instruction": ""}'], ":1: field 'instruction'"),
        (['{"instruction": "a", "instances": "nope"}'], ":1: field 'instances'"),
        (["[1, 2]"], ":1: expected a JSON object"),
        (['{"id": "a", "instruction": "x"}', '{"id": "a", "instruction": "y"}'], ":2: duplicate task id"),
    ],
)
def test_malformed_lines_are_reported_with_file_and_line(tmp_path, lines, expected):
    f = write_lines(tmp_path / "bad.jsonl", lines)
    with pytest.raises(SeedFileError) as e:
        load_seed_tasks(f)
    assert str(e.value).startswith(str(f))
    assert expected in str(e.value)


def test_non_utf8_bytes_are_reported_with_line(tmp_path):
    f = tmp_path / "latin1.jsonl"
    f.write_bytes(b'{"instruction": "fine"}\n{"instruction": "caf\xe9"}\n')
    with pytest.raises(SeedFileError, match=r"latin1\.jsonl:2: not UTF-8"):
        load_seed_tasks(f)


def test_empty_and_missing_files_are_errors(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(SeedFileError, match="empty"):
        load_seed_tasks(empty)
    with pytest.raises(SeedFileError, match="no such file"):
        load_seed_tasks(tmp_path / "missing.jsonl")


def test_default_seed_set_is_diverse_and_holds_classification_tasks():
    tasks = load_seed_tasks()
    assert DEFAULT_SEEDS.is_file()
    assert len(tasks) >= 36
    assert 0 < sum(t.is_classification for t in tasks) < len(tasks)
    assert all(t.instances for t in tasks)
    assert len({t.instruction for t in tasks}) == len(tasks)


# -- control characters and byte-order marks -------------------------------------------------------


def test_a_byte_order_mark_is_dropped_and_crlf_endings_are_read_in_every_format(tmp_path):
    text = tmp_path / "bom.txt"
    text.write_bytes(b"\xef\xbb\xbfName a color.\r\nCount to five.\r\n")
    assert [t.instruction for t in load_seed_tasks(text)] == ["Name a color.", "Count to five."]
    jsonl = tmp_path / "bom.jsonl"
    jsonl.write_bytes(b'\xef\xbb\xbf{"instruction": "Name a color."}\r\n"Line one\\r\\nline two\\tend"\r\n')
    assert [t.instruction for t in load_seed_tasks(jsonl)] == ["Name a color.", "Line one\r\nline two\tend"]


@pytest.mark.parametrize(
    ("name", "content", "error"),
    [
        ("s.txt", b"Name a color.\nClear \x1b[2J the screen\n", ":2: control character U+001B at column 7"),
        ("s.txt", b"Fine\nnul\x00here\n", ":2: control character U+0000 at column 4"),
        ("s.txt", b"Looks fine\rOverwritten\n", ":1: control character U+000D at column 11"),
        ("s.txt", b"\xef\xbb\xbfbell \x07\n", ":1: control character U+0007 at column 6"),
        (
            "s.jsonl",
            b'{"instruction": "ok"}\n{"instruction": "Title \\u001b]0;owned\\u0007 here"}\n',
            ":2: a JSON string holds a control character U+001B (escaped as \\u001b)",
        ),
        (
            "s.jsonl",
            b'{"instruction": "ok", "instances": [{"input": "", "output": "a\\u0000b"}]}\n',
            ":1: a JSON string holds a control character U+0000 (escaped as \\u0000)",
        ),
    ],
)
def test_control_characters_are_refused_naming_the_file_and_line(tmp_path, name, content, error):
    f = tmp_path / name
    f.write_bytes(content)
    with pytest.raises(SeedFileError) as e:
        load_seed_tasks(f)
    assert str(e.value) == f"{f}{error}; only text, tabs and line breaks are read"


def test_a_file_without_a_usable_task_says_what_it_found(tmp_path):
    bom = tmp_path / "bom.txt"
    bom.write_bytes(b"\xef\xbb\xbf\n")
    with pytest.raises(SeedFileError) as e:
        load_seed_tasks(bom)
    assert str(e.value) == f"{bom}: no seed tasks (the file is empty: 1 blank line)"
    huge = tmp_path / "huge.txt"
    huge.write_text("x" * 20_001 + "\n" + "y" * 20_002 + "\n")
    with pytest.raises(SeedFileError) as e:
        load_seed_tasks(huge)
    assert str(e.value) == (
        f"{huge}: no usable seed tasks; 2 skipped (2 larger than 20000 characters), first: "
        f"{huge}:1: larger than 20000 characters (a line of 20001 characters); skipped"
    )
