"""`synth select` end to end on a small dataset with a scripted engine and a deterministic embedder:
what each method keeps, what becomes a reject and why, scores stored once, resume, the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from synth.engines import ScriptedEngine
from synth.engines.base import ChatRequest
from synth.flows.selection import compare_methods, select_dataset
from synth.schemas import Record, RunInfo
from synth.schemas.selection import SelectionConfig
from synth.shards import DatasetWriter, read_manifest, scan

_QUALITY = re.compile(r"\[q=(\d)\]")


def rate(request: ChatRequest) -> str:
    """Complexity: 1 + the instruction's count of 'step'; quality: the answer's [q=N] marker;
    an answer saying BROKEN gets a reply that is not JSON."""
    prompt = request.messages[-1].content
    if request.tag == "select_complexity":
        instruction = prompt.split("[TEXT START]\n")[1].split("\n[TEXT END]")[0]
        return json.dumps({"score": min(6, 1 + instruction.count("step"))})
    answer = prompt.split("[TEXT START]\n")[2].split("\n[TEXT END]")[0]
    if "BROKEN" in answer:
        return "I think it is quite good"
    return json.dumps({"score": int(_QUALITY.search(answer).group(1))})


class LetterEmbedder:
    """Letter counts of the text: records with the same words point the same way."""

    name = "embedding"

    def __init__(self) -> None:
        self.calls = 0

    def describe(self):
        return {"kind": "letters"}

    def embed(self, texts):
        self.calls += 1
        out = np.zeros((len(texts), 26), dtype=np.float32)
        for row, text in enumerate(texts):
            for ch in text.lower():
                if "a" <= ch <= "z":
                    out[row, ord(ch) - 97] += 1
        return out


RECORDS = [
    # instruction, output
    ("Explain step by step, step by step, how rain forms.", "Water evaporates and condenses. [q=5]"),
    ("Explain step by step, step by step, how rain forms!", "Water evaporates and condenses! [q=5]"),  # near copy
    ("List one zebra fact.", "Zebras have black and white stripes, unique for every zebra. [q=4]"),
    ("Describe a quick jog in the park step by step.", "Put on shoes, jog, stretch. [q=3]"),
    ("Say hi.", "hi [q=2]"),
    ("Write a haiku about a fox.", "BROKEN reply follows"),
    ("Translate 'yes' to Spanish.", "Sí, which is how Spanish speakers say yes in every country of the world. [q=1]"),
]


def build(path: Path, records=RECORDS) -> list[Record]:
    rows = [Record(generator="test", instruction=i, output=o) for i, o in records]
    with DatasetWriter(path, shard_rows=3) as writer:
        writer.start_run(RunInfo(run_id="gen", generator="test", config={}, engine={}, model="scripted"))
        writer.commit_batch("gen", 0, rows[:4], [])
        writer.commit_batch("gen", 1, rows[4:], [])
        writer.finish_run("gen")
    return rows


@pytest.fixture
def source(tmp_path) -> Path:
    build(tmp_path / "src")
    return tmp_path / "src"


def run(source: Path, out: Path, method: str, budget: int, engine=None, embedder=None, **fields):
    engine = engine or ScriptedEngine(rate)
    config = SelectionConfig(method=method, budget=budget, **fields)
    return select_dataset(source, out, config, engine=engine, embedder=embedder or LetterEmbedder())


def kept(out: Path) -> pl.DataFrame:
    return scan(out).collect().sort("selection_rank")


def rejects(out: Path) -> pl.DataFrame:
    return scan(out, "rejects").collect()


def test_deita_keeps_the_best_scored_diverse_records_with_their_scores(source, tmp_path):
    summary = run(source, tmp_path / "out", "deita", budget=3)
    frame = kept(tmp_path / "out")
    # Combined scores: rain 5x5=25 (twice: the copy, tied, is too similar), jog 3x3=9, zebra 1x4=4.
    rain, copy = sorted(RECORDS[:2], key=lambda r: Record(generator="t", instruction=r[0], output=r[1]).id)
    assert frame["instruction"].to_list() == [rain[0], RECORDS[3][0], RECORDS[2][0]]
    assert frame["complexity_score"].to_list() == [5.0, 3.0, 1.0]
    assert frame["quality_score"].to_list() == [5.0, 3.0, 4.0]
    assert frame["selection_method"].unique().to_list() == ["deita"]
    assert frame["selection_rank"].to_list() == [0, 1, 2]
    assert frame["selection_distance"][0] is None and all(d > 0.1 for d in frame["selection_distance"][1:])
    assert frame["response_tokens"].null_count() == 0
    out = rejects(tmp_path / "out")
    by_text = {r["instruction"]: r for r in out.iter_rows(named=True)}
    assert by_text[copy[0]]["reason"] == "too similar to a selected record"
    assert by_text[copy[0]]["stage"] == "selection" and by_text[copy[0]]["phase"] == "curation"
    assert by_text[RECORDS[4][0]]["reason"] == "outside the budget of 3 by deita"
    broken = by_text[RECORDS[5][0]]
    assert broken["stage"] == "score" and broken["reason"] == "unparseable quality rating"
    assert broken["raw"] == "I think it is quite good"
    # Nothing lost: every source record is kept or a reject, once.
    assert frame.height + out.height == len(RECORDS)
    assert summary["kept"] == 3 and summary["mean_deita_score"] == pytest.approx((25 + 9 + 4) / 3, abs=1e-3)
    config = read_manifest(tmp_path / "out").runs[summary["run_id"]].config
    assert config["selection"]["method"] == "deita" and config["selection"]["threshold"] == 0.1
    assert set(config["scorers"]) == {"tokens", "complexity", "quality", "embedding"}


def test_longest_and_random_need_no_model(source, tmp_path):
    engine = ScriptedEngine(rate)
    run(source, tmp_path / "long", "longest", budget=2, engine=engine)
    assert engine.calls == []
    frame = kept(tmp_path / "long")
    assert frame["instruction"].to_list() == [RECORDS[6][0], RECORDS[2][0]]
    # Whitespace words: the scripted engine has no tokenizer.
    assert frame["response_tokens"].to_list() == [len(RECORDS[6][1].split()), len(RECORDS[2][1].split())]
    run(source, tmp_path / "r1", "random", budget=4, seed=7, engine=engine)
    run(source, tmp_path / "r2", "random", budget=4, seed=7, engine=engine)
    assert kept(tmp_path / "r1")["id"].to_list() == kept(tmp_path / "r2")["id"].to_list()
    assert engine.calls == []


def test_ifd_takes_hard_records_below_one_and_flags_the_rest(source, tmp_path):
    run(source, tmp_path / "out", "ifd", budget=10)
    frame = kept(tmp_path / "out")
    assert frame.height > 0 and (frame["ifd"] < 1).all()
    assert frame["ifd"].to_list() == sorted(frame["ifd"].to_list(), reverse=True)
    out = rejects(tmp_path / "out")
    flagged = out.filter(pl.col("reason") == "ifd >= 1")
    assert flagged.height > 0 and (flagged["ifd"] >= 1).all()
    assert all("ifd>=1" in tags for tags in flagged["tags"].to_list())
    assert frame.height + out.height == len(RECORDS)


def test_kcenter_and_a_budget_larger_than_the_data(source, tmp_path):
    summary = run(source, tmp_path / "out", "kcenter", budget=100)
    assert summary["kept"] == len(RECORDS) and summary["rejected"] == 0
    frame = kept(tmp_path / "out")
    assert frame["selection_rank"].to_list() == list(range(len(RECORDS)))


def test_scores_are_stored_once_and_reused_by_every_later_selection(source, tmp_path):
    engine, embedder = ScriptedEngine(rate), LetterEmbedder()
    run(source, tmp_path / "a", "deita", budget=2, engine=engine, embedder=embedder)
    asked = sum(len(batch) for batch in engine.calls)
    assert asked == 2 * len(RECORDS) and embedder.calls == 1
    again_engine, again_embedder = ScriptedEngine(rate), LetterEmbedder()
    run(source, tmp_path / "b", "deita", budget=3, engine=again_engine, embedder=again_embedder)
    assert again_engine.calls == [] and again_embedder.calls == 0
    assert (source / "index" / "selection").is_dir()


def test_a_scoring_run_killed_midway_resumes_without_scoring_finished_batches(source, tmp_path):
    seen: list[str] = []

    def dies_after_two_batches(request):
        seen.append(request.tag)
        if len(seen) > 4:
            raise RuntimeError("killed")
        return rate(request)

    with pytest.raises(RuntimeError, match="killed"):
        run(source, tmp_path / "out", "deita", budget=2, engine=ScriptedEngine(dies_after_two_batches), score_batch=2)
    engine = ScriptedEngine(rate)
    run(source, tmp_path / "out", "deita", budget=2, engine=engine, score_batch=2)
    # Two complexity batches of two were stored before the kill: only the other records are rated again.
    complexity = [r for batch in engine.calls for r in batch if r.tag == "select_complexity"]
    assert len(complexity) == len(RECORDS) - 4
    assert kept(tmp_path / "out").height == 2


def test_engine_errors_are_rejects_now_and_asked_again_next_time(source, tmp_path):
    from synth.engines.base import Completion

    def down(request):
        return Completion(text="", finish_reason="error", error="HTTP 503")

    run(source, tmp_path / "a", "deita", budget=2, engine=ScriptedEngine(down))
    out = rejects(tmp_path / "a")
    assert (out["stage"] == "score").all() and (out["reason"] == "engine error").all()
    assert out.height == len(RECORDS) and out["detail"].to_list()[0] == "HTTP 503"
    engine = ScriptedEngine(rate)
    run(source, tmp_path / "b", "deita", budget=2, engine=engine)
    assert sum(len(b) for b in engine.calls) == 2 * len(RECORDS)


def test_the_same_selection_again_is_up_to_date(source, tmp_path):
    first = run(source, tmp_path / "out", "longest", budget=2)
    second = run(source, tmp_path / "out", "longest", budget=2)
    assert not first["up_to_date"] and second["up_to_date"]
    assert scan(tmp_path / "out").collect().height == 2


def test_compare_writes_one_subset_per_method_with_figures(source, tmp_path):
    rows = compare_methods(source, tmp_path / "cmp", ["random", "longest", "deita"],
                           SelectionConfig(budget=3), engine=ScriptedEngine(rate), embedder=LetterEmbedder())  # fmt: skip
    assert [r["method"] for r in rows] == ["random", "longest", "deita"]
    for row in rows:
        assert row["selected"] == 3 and row["diversity"] is not None and row["proxy_loss"] is None
        assert scan(tmp_path / "cmp" / row["method"]).collect().height == 3
    deita = rows[2]
    assert deita["mean_deita_score"] >= max(r["mean_deita_score"] or 0 for r in rows[:2])


def make_rater():
    """The responder factory a scripted engine config names."""
    return rate


def test_a_selection_whose_scores_are_stored_loads_no_model(source, tmp_path, monkeypatch):
    from synth.schemas import ScriptedEngineConfig

    config = ScriptedEngineConfig(responder="tests.selection.test_select_flow:make_rater")
    selection = SelectionConfig(method="deita", budget=2)
    first = select_dataset(source, tmp_path / "a", selection, engine_config=config, embedder=LetterEmbedder())

    def no_model(_config):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("synth.engines.get_engine", no_model)
    second = select_dataset(source, tmp_path / "b", selection, engine_config=config, embedder=LetterEmbedder())
    assert second["kept"] == first["kept"] == 2
    assert kept(tmp_path / "a")["id"].to_list() == kept(tmp_path / "b")["id"].to_list()
