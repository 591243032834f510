"""Reading a dataset: the summary, the card, exports, and other tools seeing the same rows."""

from __future__ import annotations

import json

import duckdb
import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from synth.cli import app
from synth.shards import read_manifest, scan
from synth.shards.export import export, export_frame
from synth.shards.summary import funnel, leading_verbs, lineage, summarize

runner = CliRunner()


def card_header(path) -> dict:
    text = (path / "README.md").read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_funnel_accounts_for_every_candidate(small_dataset):
    table = funnel(small_dataset)
    manifest = read_manifest(small_dataset)
    assert table["count"].sum() == manifest.rows("kept") + manifest.rows("rejects")
    assert table.filter(pl.col("stage") == "kept")["count"].item() == manifest.rows("kept")
    by_reason: dict[tuple[str, str], int] = {}
    for r in table.filter(pl.col("stage") != "kept").to_dicts():
        by_reason[(r["stage"], r["reason"])] = by_reason.get((r["stage"], r["reason"]), 0) + r["count"]
    assert by_reason == {(s, r): n for s, reasons in manifest.rejects_by_reason().items() for r, n in reasons.items()}


def test_summary_figures_match_the_data(small_dataset):
    summary = summarize(small_dataset, sample=2)
    kept = scan(small_dataset).collect()
    assert summary["kept"] == kept.height
    assert {g["generator"]: g["count"] for g in summary["generators"]} == dict(
        kept.group_by("generator").len().iter_rows()
    )
    assert {r["round"] for r in summary["evolution_rounds"]} == {0, 1, 2}
    assert sorted(s["judge_score"] for s in summary["judge_scores"]) == [4.0, 5.0]
    assert len(summary["samples"]) == 2 and all(s["id"] in set(kept["id"]) for s in summary["samples"])
    lengths = {row["field"]: row for row in summary["lengths"]}
    assert lengths["output"]["max"] == kept["output"].str.split(" ").list.len().max()
    json.dumps(summary, default=str)  # JSON-able for --json


def test_leading_verbs_count_first_words_case_insensitively():
    frame = pl.LazyFrame(
        {"instruction": ["Explain rain.", "explain snow", "  List fruits", "123 Name it", "Explain wind"]}
    )
    assert leading_verbs(frame).to_dicts() == [
        {"verb": "explain", "count": 3},
        {"verb": "list", "count": 1},
        {"verb": "name", "count": 1},
    ]


def test_lineage_leads_back_to_the_root(small_dataset):
    kept = scan(small_dataset).filter(pl.col("round") == 2).collect()
    chain = lineage(small_dataset, kept["id"].item())
    assert [step["round"] for step in chain] == [2, 1, 0]
    assert chain[-1]["parent_id"] is None


def test_card_header_parses_and_its_numbers_match_the_manifest(small_dataset):
    header = card_header(small_dataset)
    manifest = read_manifest(small_dataset)
    configs = {c["config_name"]: c for c in header["configs"]}
    assert set(configs) == {"default", "rejects"}
    listed = {s.path for s in manifest.shards if s.kind == "kept"}
    globbed = {
        str(p.relative_to(small_dataset)) for p in small_dataset.glob(configs["default"]["data_files"][0]["path"])
    }
    assert globbed == listed
    assert header["dataset_info"]["splits"][0]["num_examples"] == manifest.rows("kept")
    assert [f["name"] for f in header["dataset_info"]["features"]] == scan(small_dataset).collect_schema().names()
    assert header["license"] and "synthetic" in header["tags"] and header["size_categories"] == ["n<1K"]
    body = (small_dataset / "README.md").read_text()
    assert f"{manifest.rows('kept')} kept records and {manifest.rows('rejects')} rejects" in body


def test_duckdb_reads_the_same_rows_as_polars(small_dataset):
    expected = scan(small_dataset).select("id", "instruction", "output").sort("id").collect()
    got = duckdb.sql(
        f"select id, instruction, output from read_parquet('{small_dataset}/data/*.parquet') order by id"
    ).pl()
    assert got.equals(expected)
    stages = duckdb.sql(f"select count(*) from read_parquet('{small_dataset}/rejects/*.parquet')").fetchall()[0][0]
    assert stages == read_manifest(small_dataset).rows("rejects")


def test_hugging_face_datasets_loads_the_directory_through_its_card(small_dataset, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    from datasets import load_dataset

    ds = load_dataset(str(small_dataset), split="train")
    expected = scan(small_dataset).select("id", "messages").sort("id").collect()
    assert sorted(ds["id"]) == expected["id"].to_list()
    row = ds.filter(lambda r: r["id"] == expected["id"][0])[0]
    assert row["messages"] == expected["messages"][0].to_list()
    rejects = load_dataset(str(small_dataset), "rejects", split="train")
    assert rejects.num_rows == read_manifest(small_dataset).rows("rejects")


@pytest.mark.parametrize("fmt", ["jsonl", "alpaca", "sharegpt", "messages"])
def test_every_export_format_round_trips_the_records(small_dataset, tmp_path, fmt):
    out = tmp_path / f"{fmt}.jsonl"
    rows = export(small_dataset, fmt, out)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    kept = scan(small_dataset).collect()
    assert rows == len(lines) == kept.height
    records = {(r["instruction"], r["input"], r["output"]) for r in kept.to_dicts()}
    if fmt in ("jsonl", "alpaca"):
        assert {(x["instruction"], x["input"], x["output"]) for x in lines} == records
    assert {x["id"] for x in lines} == set(kept["id"])  # every format keeps the record id
    if fmt == "messages":
        assert {tuple(m["content"] for m in x["messages"]) for x in lines} == {
            (f"{i}\n\n{inp}" if inp else i, o) for i, inp, o in records
        }
    if fmt == "sharegpt":
        assert all([t["from"] for t in x["conversations"]] == ["human", "gpt"] for x in lines)
        assert {x["conversations"][1]["value"] for x in lines} == {o for _, _, o in records}


def test_export_frame_rejects_an_unknown_format(small_dataset):
    with pytest.raises(ValueError, match="unknown export format"):
        export_frame(small_dataset, "csv")  # type: ignore[arg-type]


def test_inspect_command_prints_the_funnel_and_json_for_scripts(small_dataset):
    result = runner.invoke(app, ["inspect", str(small_dataset), "--rejects"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Funnel" in result.output and "Leading verbs" in result.output and "Sample rejects" in result.output
    as_json = runner.invoke(app, ["inspect", str(small_dataset), "--json"])
    assert json.loads(as_json.output) == json.loads(json.dumps(summarize(small_dataset), default=str))


def test_inspect_and_export_name_a_directory_that_is_not_a_dataset(tmp_path):
    for args in (["inspect", str(tmp_path)], ["export", str(tmp_path), "--format", "alpaca"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and str(tmp_path) in result.output and "not a dataset" in result.output


def test_export_command_writes_the_default_file(small_dataset):
    result = runner.invoke(app, ["export", str(small_dataset), "--format", "alpaca"])
    assert result.exit_code == 0, result.output
    assert (small_dataset / "export" / "alpaca.jsonl").is_file()


def test_inspect_and_the_card_show_the_languages_and_abilities(tmp_path):
    from synth.schemas import Record, RunInfo
    from synth.shards import DatasetWriter

    def rec(n: int, ability: str) -> Record:
        return Record(generator="g", instruction=f"请写第{n}首诗", output="春天来了。", language="zh", ability=ability)

    with DatasetWriter(tmp_path / "ds") as w:
        w.start_run(RunInfo(run_id="r", generator="g", config={"language": "zh"}, engine={}))
        w.commit_batch("r", 0, [rec(1, "creative_writing"), rec(2, "creative_writing"), rec(3, "mathematics")], [])
    summary = summarize(tmp_path / "ds")
    assert summary["abilities"] == [
        {"ability": "creative_writing", "count": 2},
        {"ability": "mathematics", "count": 1},
    ]
    assert summary["languages"] == [{"language": "zh", "count": 3}]
    assert card_header(tmp_path / "ds")["language"] == ["zh"]
    shown = runner.invoke(app, ["inspect", str(tmp_path / "ds")])
    assert shown.exit_code == 0 and "Abilities" in shown.output and "creative_writing" in shown.output


def test_the_card_says_when_an_evaluation_file_does_not_read(tmp_path):
    from synth.schemas import Manifest
    from synth.shards.card import write_card

    (tmp_path / "evaluation.json").write_text('{"base": {}}')
    write_card(tmp_path, Manifest())
    assert "`evaluation.json` is present but does not read" in (tmp_path / "README.md").read_text()
    (tmp_path / "evaluation.json").unlink()
    write_card(tmp_path, Manifest())
    assert "Proxy evaluation" not in (tmp_path / "README.md").read_text()


def test_the_card_gives_the_side_by_side_judges_flip_rate(tmp_path):
    from synth.schemas import Manifest, RunInfo
    from synth.shards.card import render_card

    checked = RunInfo(
        run_id="p1",
        generator="preferences",
        config={},
        engine={},
        state={"pairs": {"position_checked": 8, "flipped": 2}},
    )
    unchecked = RunInfo(run_id="p2", generator="preferences", config={}, engine={}, state={"pairs": {"paired": 3}})
    card = render_card(Manifest(runs={"p1": checked, "p2": unchecked}))
    assert (
        "Run `p1` showed 8 pairs to the judge side by side in both orders: the verdict flipped with the order for 2 (25.0%)"
        in card
    )
    assert "`p2` showed" not in card
