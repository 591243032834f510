"""The backtranslation flow on a scripted engine: the funnel, rounds, resume; and the CLI."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from synth.engines import ChatRequest, ScriptedEngine
from synth.flows.backtranslation import run_backtranslation
from synth.flows.cli import app
from synth.schemas import BacktranslationConfig, DatasetConfig, ScriptedEngineConfig
from synth.shards import read_manifest, scan, verify
from tests.generators.test_backtranslation import Script

pytestmark = pytest.mark.usefixtures("prefect_harness")
TOPICS = ["rain", "snow", "tides", "wind", "frost", "fog"]


def corpus(folder):
    folder.mkdir()
    for topic in TOPICS:
        body = f"How {topic} forms is explained here in plain words: air, water and temperature work together to make {topic} over hours and days."
        (folder / f"{topic}.md").write_text(f"# {topic.title()}\n\n{body}\n\n# Menu\n\nHome | About | Blog | Shop\n")
    (folder / "zz_copy.md").write_text((folder / "rain.md").read_text())  # an exact duplicate segment
    (folder / "blob.txt").write_bytes(b"\x00\x00binary")
    return folder


def run(docs, out, responder, **config):
    return run_backtranslation(
        BacktranslationConfig(docs=str(docs), min_chars=60, chunk_size=2, **config),
        ScriptedEngineConfig(),
        DatasetConfig(path=str(out)),
        model=ScriptedEngine(responder),
        batch_retries=0,
    )


def scores_by_topic(good: set[str]):
    def grade(request: ChatRequest) -> str:
        answer = request.messages[0].content.split("Answer:", 1)[1]
        return (
            '{"rationale": "r", "score": 5}'
            if any(f"make {t} " in answer for t in good)
            else '{"rationale": "r", "score": 3}'
        )

    return grade


def test_run_stores_the_funnel_and_keeps_only_high_scores(tmp_path):
    summary = run(corpus(tmp_path / "docs"), tmp_path / "ds", Script(scores_by_topic({"rain", "snow"})))
    funnel = read_manifest(tmp_path / "ds").runs[summary["run_id"]].state["funnel"]
    assert funnel["documents"] == 7 and funnel["documents_skipped"] == {"binary file": 1}
    assert funnel["segments"] == 6 and funnel["segments_dropped"]["exact duplicate"] == 1
    assert funnel["rounds"]["1"] == {"graded": 6, "kept": 2, "unparseable": 0, "scores": {"5": 2, "3": 4}}
    kept = scan(tmp_path / "ds").collect()
    assert sorted(kept["source_doc"]) == ["rain.md", "snow.md"]
    rejects = scan(tmp_path / "ds", "rejects").collect()
    assert set(rejects["stage"]) == {"document", "segment", "curation"}
    assert verify(tmp_path / "ds") == []


def test_later_rounds_retry_only_uncurated_segments_with_a_grown_few_shot_pool(tmp_path):
    calls: list[ChatRequest] = []
    grade = scores_by_topic({"rain"})

    def responder(request: ChatRequest) -> str:
        calls.append(request)
        if request.tag == "backtranslation_grade" and len([c for c in calls if c.tag == "backtranslation_grade"]) > 6:
            return '{"rationale": "better now", "score": 5}'  # round 2 grades everything 5
        return Script(grade)(request)

    summary = run(corpus(tmp_path / "docs"), tmp_path / "ds", responder, rounds=2, num_demos=40)
    rounds = read_manifest(tmp_path / "ds").runs[summary["run_id"]].state["funnel"]["rounds"]
    assert rounds["1"]["kept"] == 1 and rounds["2"]["graded"] == 5 and rounds["2"]["kept"] == 5
    round2_backward = [c for c in calls if c.tag == "backtranslation_backward"][6:]
    assert round2_backward and all("Explain this: How" in c.messages[0].content for c in round2_backward)
    kept = scan(tmp_path / "ds").collect()
    assert kept.height == 6 and kept["source_doc"].n_unique() == 6


def test_rerun_resumes_without_sending_committed_chunks_again(tmp_path):
    docs = corpus(tmp_path / "docs")
    first = run(docs, tmp_path / "ds", Script())
    engine = ScriptedEngine(Script())
    again = run_backtranslation(
        BacktranslationConfig(docs=str(docs), min_chars=60, chunk_size=2),
        ScriptedEngineConfig(),
        DatasetConfig(path=str(tmp_path / "ds")),
        model=engine,
    )
    assert engine.calls == [] and again["kept"] == first["kept"] == 6


def test_cli_rejects_an_unreadable_source(tmp_path):
    result = CliRunner().invoke(
        app, ["generate", "backtranslate", "--docs", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2 and "no such file" in result.output
