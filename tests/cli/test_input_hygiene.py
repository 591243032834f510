"""Bad input gets a clear error, never a silent change of meaning: empty paths are refused, inputs
with nothing usable fail before any model loads saying what they hold, two source examples never
share an id, and text from records or file names never drives the terminal."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from synth.cli import app
from synth.cli.output import escape_log_records, print_summary
from synth.schemas import Record, Reject, RunInfo
from synth.shards import DatasetWriter
from synth.text import control_problem, printable

runner = CliRunner()
EMPTY = "an empty path names no file or folder (for this folder, give '.')"
ESC = "\x1b"


def synth(*args: str | Path):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "400"}, catch_exceptions=False)


def error_line(result, code: int = 2) -> str:
    """The one line a failed command printed (it must be the only one), with its exit code checked."""
    text = result.output.strip()
    assert result.exit_code == code, result.output
    assert "\n" not in text, text
    return text


# -- empty paths ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["generate", "self-instruct", "--out", ""], "--out"),
        (["generate", "self-instruct", "--out="], "--out"),
        (["generate", "self-instruct", "--out", "ds", "--seeds", ""], "--seeds"),
        (["generate", "evol", "--from", "", "--out", "ds"], "--source"),
        (["generate", "backtranslate", "--docs", "", "--out", "ds"], "--docs"),
        (["generate", "self-instruct", "--out", "ds", "--engine-config", ""], "--engine-config"),
        (["generate", "self-instruct", "--out", "ds", "--curation", ""], "--curation"),
        (["curate", "r.jsonl", "--out", ""], "--out"),
        (["curate", "r.jsonl", "--benchmark", "b.txt", "--benchmark", ""], "--benchmark"),
        (["curate", ""], "TARGET"),
        (["inspect", ""], "PATH"),
        (["export", "ds", "--out", ""], "--out"),
        (["verify", ""], "PATH"),
        (["run", ""], "RECIPE"),
        (["select", "ds", "--budget", "1", "--out", ""], "--out"),
        (["train", "r.jsonl", "--out", ""], "--out"),
    ],
)
def test_an_empty_path_is_refused_naming_the_option_and_nothing_is_written(tmp_path, monkeypatch, args, option):
    monkeypatch.chdir(tmp_path)
    assert error_line(synth(*args)) == f"error: {option}: {EMPTY}"
    assert list(tmp_path.iterdir()) == []


def test_a_recipe_with_an_empty_dataset_path_or_input_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "r.yaml"
    step = {"generator": "self_instruct", "num_records": 1}
    recipe.write_text(yaml.safe_dump({"name": "r", "dataset": {"path": ""}, "steps": [step]}))
    assert error_line(synth("run", recipe)) == f"error: {recipe}: dataset.path: {EMPTY}"
    recipe.write_text(yaml.safe_dump({"name": "r", "dataset": {"path": "ds"}, "steps": [step | {"seeds": ""}]}))
    assert error_line(synth("run", recipe)) == f"error: {recipe}: steps.0.seeds: {EMPTY}"
    assert [p.name for p in tmp_path.iterdir()] == ["r.yaml"]


# -- inputs with nothing usable, duplicate ids: exit 2 before any model loads -------------------------


def test_a_documents_folder_without_a_usable_document_fails_saying_what_it_holds(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_bytes(b"\x00\x01\x02")
    (docs / "b.md").write_bytes(b"\x89PNG\x00")
    (docs / "c.html").write_text(" \n")
    out = tmp_path / "out"
    result = synth("generate", "backtranslate", "--docs", docs, "--out", out)
    assert error_line(result) == f"error: {docs}: 3 files, none usable: 2 binary, 1 empty"
    assert not out.exists()


def test_a_seed_file_without_a_task_and_an_empty_source_fail_saying_what_they_hold(tmp_path):
    seeds = tmp_path / "seeds.txt"
    seeds.write_text("\n\n")
    out = tmp_path / "out"
    result = synth("generate", "self-instruct", "--seeds", seeds, "--out", out)
    assert error_line(result) == f"error: {seeds}: no seed tasks (the file is empty: 2 blank lines)"
    source = tmp_path / "source.jsonl"
    source.write_text(json.dumps({"instruction": "  "}) + "\n")
    result = synth("generate", "evol", "--from", source, "--out", out)
    assert error_line(result) == (
        f"error: {source}: no instructions in the source: 1 example(s), none with an instruction (first: {source}:1)"
    )
    assert not out.exists()


def test_two_source_examples_with_one_id_are_refused_with_both_lines(tmp_path):
    source = tmp_path / "source.jsonl"
    rows = [{"id": "q1", "instruction": "Add 2 and 2."}, {"id": "q2", "instruction": "Name a fruit."}]
    source.write_text("\n".join(json.dumps(r) for r in [*rows, {"id": "q1", "instruction": "Add 3 and 3."}]))
    out = tmp_path / "out"
    result = synth("generate", "evol", "--from", source, "--out", out)
    assert error_line(result) == f"error: {source}:3: id 'q1' is already the id of {source}:1; ids must be unique"
    assert not out.exists()


def test_control_characters_in_a_seed_file_fail_naming_the_line(tmp_path):
    seeds = tmp_path / "seeds.txt"
    seeds.write_bytes(b"Name a fruit.\nRed \x1b[31malert\n")
    result = synth("generate", "self-instruct", "--seeds", seeds, "--out", tmp_path / "out")
    assert error_line(result) == (
        f"error: {seeds}:2: control character U+001B at column 5; only text, tabs and line breaks are read"
    )


# -- text from records and file names never drives the terminal ---------------------------------------


def test_printable_escapes_every_control_but_tab_and_newline():
    text = "a\x1b[31mred\x1b[0m \x1b]0;title\x07 \x9b2J \x00\x7f\r\n\tend"
    assert printable(text) == "a\\x1b[31mred\\x1b[0m \\x1b]0;title\\x07 \\x9b2J \\x00\\x7f\\x0d\n\tend"
    assert printable("plain, ünïcode, 中文, \u2028") == "plain, ünïcode, 中文, \u2028"
    assert control_problem("CRLF\r\nis fine\tand tabs") is None


def test_inspect_shows_escape_sequences_in_records_and_rejects_escaped(tmp_path):
    path = tmp_path / "ds"
    bad = Record(generator="import", instruction="Say \x1b[31mred\x1b[0m", output="\x1b]0;owned\x07done")
    with DatasetWriter(path) as writer:
        writer.start_run(RunInfo(run_id="r", generator="import", config={}, engine={}, model="m\x1b[2J"))
        dropped = Reject(generator="import", instruction="\x9b2Jgone", output="x", stage="heuristic",
                         reason="bad \x1b[5mblink")  # fmt: skip
        writer.commit_batch("r", 0, [bad], [dropped])
        writer.finish_run("r")
    result = synth("inspect", path, "--rejects", "--sample", "5")
    assert result.exit_code == 0, result.output
    assert ESC not in result.output and "\x9b" not in result.output and "\x07" not in result.output
    for shown in ("Say \\x1b[31mred\\x1b[0m", "\\x1b]0;owned\\x07done", "m\\x1b[2J", "bad \\x1b[5mblink",
                  "\\x9b2Jgone"):  # fmt: skip
        assert shown in result.output, shown


def test_an_error_line_shows_a_file_name_with_an_escape_sequence_escaped(tmp_path):
    seeds = tmp_path / "evil\x1b[2Jname.jsonl"
    seeds.write_text("{oops\n")
    result = synth("generate", "self-instruct", "--seeds", seeds, "--out", tmp_path / "out")
    shown = str(seeds).replace(ESC, "\\x1b")
    assert error_line(result) == (
        f"error: {shown}:1: invalid JSON: Expecting property name enclosed in double quotes (column 2)"
    )


def test_a_summary_shows_reasons_and_paths_escaped(tmp_path, capsys):
    print_summary(
        {
            "dataset": str(tmp_path / "d\x1b[1m"),
            "rejects_by_reason": {"judge\x07": {"said \x1b]52;c;aGk=\x07": 2}},
            "kept": 1,
            "rejected": 2,
            "batches": 1,
            "run_id": "r\x1b[0m",
            "reached_target": True,
        }
    )
    printed = capsys.readouterr().out
    assert ESC not in printed and "\x07" not in printed
    for shown in ("d\\x1b[1m", "judge\\x07", "said \\x1b]52;c;aGk=\\x07", "r\\x1b[0m"):
        assert shown in printed, shown


def test_log_lines_show_control_characters_escaped(caplog):
    escape_log_records()
    escape_log_records()  # once per process, however often asked
    with caplog.at_level(logging.INFO, logger="synth.test"):
        logging.getLogger("synth.test").warning("%s: skipped %d", "file\x1b[31m.txt", 2)
        logging.getLogger("synth.test").info("plain %s", "text")
    assert caplog.messages == ["file\\x1b[31m.txt: skipped 2", "plain text"]
