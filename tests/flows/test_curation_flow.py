"""Curating datasets and files, from the library and the CLI; two runs leave no duplicates across them."""

from __future__ import annotations

import json

import polars as pl
import pytest
from typer.testing import CliRunner

from synth.cli import app
from synth.engines import ScriptedEngine
from synth.flows.curate import curate_dataset, curate_file
from synth.flows.self_instruct import run_self_instruct
from synth.schemas import DatasetConfig, ScriptedEngineConfig, SelfInstructConfig
from synth.schemas.curation import CurationConfig
from synth.shards import read_manifest, scan, verify
from synth.shards.export import export
from synth.shards.record_files import CurationInputError, RecordsFile
from tests.conftest import SelfInstructScript

runner = CliRunner()
WORDS = " ".join(f"word{i}" for i in range(30))


def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


ROWS = [
    {"instruction": "Explain how tides work on the coast", "output": f"Tides follow the moon. {WORDS}"},
    {
        "instruction": "explain how tides  work on the coast",
        "output": f"tides follow the moon. {WORDS}",
    },  # exact, after folding
    {
        "instruction": "Explain how tides work on the coast today",
        "output": f"Tides follow the moon. {WORDS} indeed",
    },  # near
    {"instruction": "Hi", "output": "Hello there friend"},  # heuristic: too short
    {
        "instruction": "Name three primary colours for a painter",
        "input": "",
        "output": "Red, yellow and blue are the three.",
    },
]


def test_curating_a_file_into_a_dataset_explains_every_drop(tmp_path):
    summary = curate_file(write_jsonl(tmp_path / "in.jsonl", ROWS), tmp_path / "ds", CurationConfig())
    assert summary["records_in"] == 5 and summary["kept"] == 2
    rejects = scan(tmp_path / "ds", "rejects").collect()
    assert sorted(rejects["reason"].to_list()) == ["exact duplicate", "instruction under 3 words", "near duplicate"]
    assert verify(tmp_path / "ds") == []
    kept = scan(tmp_path / "ds").collect()
    assert set(kept["generator"]) == {"import"} and sorted(kept["source_doc"]) == ["in.jsonl:1", "in.jsonl:5"]
    assert kept["sampling"].is_null().all()  # we did not sample these


def test_imported_records_keep_their_own_ids_through_curation_and_export(tmp_path):
    rows = [{"id": f"src-{n}", **row} for n, row in enumerate(ROWS)]
    rows[4]["id"] = 4  # a number is an id too
    curate_file(write_jsonl(tmp_path / "in.jsonl", rows), tmp_path / "ds", CurationConfig())
    kept = scan(tmp_path / "ds").collect()
    assert sorted(kept["source_id"]) == ["4", "src-0"]
    rejects = scan(tmp_path / "ds", "rejects").collect()
    assert sorted(rejects["source_id"]) == ["src-1", "src-2", "src-3"]
    pl.DataFrame(rows[:1]).write_parquet(tmp_path / "in.parquet")
    [record] = RecordsFile.open(tmp_path / "in.parquet").records()
    assert (record.source_id, record.source_doc) == ("src-0", "in.parquet:1")
    export(tmp_path / "ds", "alpaca", tmp_path / "alpaca.jsonl")
    exported = {json.loads(line)["id"] for line in (tmp_path / "alpaca.jsonl").read_text().splitlines()}
    assert exported == set(kept["id"])


def test_a_second_file_into_the_same_dataset_adds_no_duplicates_of_the_first(tmp_path):
    curate_file(write_jsonl(tmp_path / "a.jsonl", ROWS[:1]), tmp_path / "ds", CurationConfig())
    second = curate_file(write_jsonl(tmp_path / "b.jsonl", ROWS[1:3] + ROWS[4:]), tmp_path / "ds", CurationConfig())
    assert second["kept"] == 1
    assert scan(tmp_path / "ds").collect().height == 2


def test_curating_a_dataset_in_place_moves_drops_to_the_rejects(tmp_path):
    curate_file(
        write_jsonl(tmp_path / "in.jsonl", ROWS),
        tmp_path / "ds",
        CurationConfig(exact_dedup=False, heuristics={"enabled": False}, minhash={"enabled": False}),
    )
    assert scan(tmp_path / "ds").collect().height == 5
    summary = curate_dataset(tmp_path / "ds", CurationConfig())
    assert summary["records_in"] == 5 and summary["kept"] == 2
    assert scan(tmp_path / "ds").collect().height == 2
    assert read_manifest(tmp_path / "ds").rows("rejects") == 3
    assert verify(tmp_path / "ds") == []
    assert list((tmp_path / "ds" / "data").iterdir()) and all(
        f.name.startswith(summary["run_id"]) for f in (tmp_path / "ds" / "data").iterdir()
    )


def test_each_in_place_pass_curates_what_the_dataset_keeps_then(tmp_path):
    """Curating in place again is a second pass, not a finished run: what was added since it last
    ran (here a copy of a kept record) is curated too, and what stayed stays."""
    raw = CurationConfig(exact_dedup=False, heuristics={"enabled": False}, minhash={"enabled": False})
    curate_file(write_jsonl(tmp_path / "in.jsonl", ROWS), tmp_path / "ds", raw)
    first = curate_dataset(tmp_path / "ds", CurationConfig())
    kept = scan(tmp_path / "ds").collect()
    curate_file(write_jsonl(tmp_path / "more.jsonl", [ROWS[0]]), tmp_path / "ds", raw)
    assert scan(tmp_path / "ds").collect().height == kept.height + 1
    second = curate_dataset(tmp_path / "ds", CurationConfig())
    assert second["run_id"] == first["run_id"] and second["batches"] == first["batches"] + 1
    assert second["records_in"] == kept.height + 1 and second["kept"] == kept.height
    assert sorted(scan(tmp_path / "ds").collect()["instruction"]) == sorted(kept["instruction"])
    assert verify(tmp_path / "ds") == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"instruction": "x"}\n', "in.jsonl:1: field 'output' is missing or not text"),
        ('{"instruction": "x", "output": 3}\n', "in.jsonl:1: field 'output'"),
        ('{"instruction": "x", "output": "y", "input": 1}\n', "in.jsonl:1: field 'input' is not text"),
        ("not json\n", "in.jsonl:1: invalid JSON"),
        ("\n", "in.jsonl: no records"),
    ],
)
def test_bad_record_files_name_the_file_and_line(tmp_path, content, message):
    path = tmp_path / "in.jsonl"
    path.write_text(content)
    with pytest.raises(CurationInputError) as e:
        RecordsFile.open(path).records()
    assert message in str(e.value)


def test_parquet_without_an_output_column_is_refused(tmp_path):
    pl.DataFrame({"instruction": ["a b c"]}).write_parquet(tmp_path / "in.parquet")
    with pytest.raises(CurationInputError, match="no 'output' column"):
        RecordsFile.open(tmp_path / "in.parquet").records()


def test_cli_curates_a_file_with_a_benchmark_and_in_place(tmp_path):
    bench = tmp_path / "bench.txt"
    bench.write_text("name three primary colours for a painter\n")
    source = write_jsonl(tmp_path / "in.jsonl", ROWS)
    result = runner.invoke(app, ["curate", str(source), "--out", str(tmp_path / "ds"), "--benchmark", str(bench)])
    assert result.exit_code == 0, result.output
    rejects = scan(tmp_path / "ds", "rejects").collect()
    leak = rejects.filter(pl.col("stage") == "decontamination")
    assert leak["detail"].to_list() == ["bench.txt:1"]
    assert "Benchmark items hit" in result.output and "bench.txt:1" in result.output
    again = runner.invoke(app, ["curate", str(tmp_path / "ds")])
    assert again.exit_code == 0, again.output
    missing = runner.invoke(app, ["curate", str(source)])
    assert missing.exit_code == 2 and "--out" in missing.output


@pytest.mark.usefixtures("prefect_harness")
def test_two_generator_runs_into_one_dataset_leave_no_duplicates_across_them(tmp_path):
    def run(seed: int):
        return run_self_instruct(
            SelfInstructConfig(num_records=6, prompts_per_batch=2, seed=seed, include_seed_tasks=False),
            ScriptedEngineConfig(),
            DatasetConfig(path=str(tmp_path / "ds")),
            model=ScriptedEngine(SelfInstructScript()),  # the same replies for both runs
            batch_retries=0,
        )

    first, second = run(0), run(1)
    # The second run's first replies repeat the first run's records word for word: all dropped,
    # and the run goes on to its own target with new ones.
    assert second["rejects_by_reason"]["dedup"] == {"exact duplicate": first["kept"]}
    kept = scan(tmp_path / "ds").collect()
    assert kept.height == first["kept"] + second["kept"]
    assert kept.select("instruction", "input", "output").n_unique() == kept.height


def test_a_records_file_is_checked_whole_then_read_a_batch_at_a_time(tmp_path):
    """The job holds where each batch starts, not the records: a file of any size costs a batch."""
    import pickle

    from synth.flows.curate import CurateFileJob

    path = tmp_path / "in.jsonl"
    lines = [
        json.dumps({"instruction": f"Task {i} " + "word " * 50, "output": f"answer {i}", "id": i}) for i in range(5000)
    ]
    lines.insert(3, "")  # a blank line is skipped, and line numbers still count it
    path.write_text("\ufeff" + "\n".join(lines) + "\n")
    source = RecordsFile.open(path, batch_size=700)
    assert source.count == 5000 and source.batches == 8
    batches = [source.batch(k) for k in range(source.batches)]
    assert [len(b) for b in batches] == [700] * 7 + [100]
    flat = [r for b in batches for r in b]
    assert [r.source_id for r in flat] == [str(i) for i in range(5000)]
    assert flat[2].source_doc == "in.jsonl:3" and flat[3].source_doc == "in.jsonl:5"  # after the blank line
    assert flat[0].instruction.startswith("Task 0 ")  # the byte-order mark is not part of the text
    job = CurateFileJob(CurationConfig(), source, "r")
    assert len(pickle.dumps(job)) < 4096 < path.stat().st_size // 100

    # A bad line anywhere fails the whole file before a batch is read, naming the line.
    path.write_text("\n".join([*lines[:4000], '{"instruction": "x"}', *lines[4000:]]) + "\n")
    with pytest.raises(CurationInputError, match=r"in\.jsonl:4001: field 'output' is missing"):
        RecordsFile.open(path, batch_size=700)


def test_a_parquet_records_file_is_read_a_batch_at_a_time(tmp_path):

    path = tmp_path / "in.parquet"
    pl.DataFrame(
        {"instruction": [f"t{i}" for i in range(2500)], "output": ["o"] * 2500, "input": [1] * 2500}
    ).write_parquet(path, row_group_size=300)
    source = RecordsFile.open(path, batch_size=1000)
    batches = [source.batch(k) for k in range(source.batches)]
    assert [len(b) for b in batches] == [1000, 1000, 500]
    assert [r.instruction for b in batches for r in b] == [f"t{i}" for i in range(2500)]
    assert batches[2][0].source_doc == "in.parquet:2001" and batches[2][0].input == "1"
