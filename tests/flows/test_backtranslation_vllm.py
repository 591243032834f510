"""Backtranslation through the real vLLM engine on the embedded model, over a few real documents."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from synth.flows.backtranslation import run_backtranslation
from synth.schemas import BacktranslationConfig, DatasetConfig, VLLMEngineConfig
from synth.shards import read_manifest, scan, verify

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("prefect_harness")]
DOCS = Path(__file__).parents[1] / "fixtures" / "docs"


def test_real_engine_backtranslates_documents_into_graded_pairs(tmp_path, vllm_engine):
    summary = run_backtranslation(
        BacktranslationConfig(docs=str(DOCS), min_score=4),
        VLLMEngineConfig(),
        DatasetConfig(path=str(tmp_path / "bt")),
        model=vllm_engine,
    )
    assert verify(tmp_path / "bt") == []
    funnel = read_manifest(tmp_path / "bt").runs[summary["run_id"]].state["funnel"]
    assert funnel["documents"] == 3 and funnel["segments"] >= 5
    graded = funnel["rounds"]["1"]
    assert graded["graded"] + graded["unparseable"] <= funnel["segments"]
    assert sum(graded["scores"].values()) == graded["graded"] > 0  # structured output always parses
    kept = scan(tmp_path / "bt").collect()
    rejects = scan(tmp_path / "bt", "rejects").collect()
    assert (
        kept.height == graded["kept"]
        and kept.height + rejects.filter(pl.col("stage") != "segment").height >= graded["graded"]
    )
    for row in kept.iter_rows(named=True):
        assert (
            row["judge_score"] >= 4
            and row["instruction"]
            and row["source_doc"] in {"composting.md", "bread.html", "bicycle.txt"}
        )
        source = (DOCS / row["source_doc"]).read_text()
        if row["source_doc"] != "bread.html":  # HTML offsets are into its extracted text
            assert source[row["source_start"] : row["source_end"]].strip()[:30] in row["output"]
    curation = rejects.filter(pl.col("stage") == "self-curation")
    ungraded = curation.filter(
        pl.col("judge_score").is_null() & ~pl.col("reason").is_in(["unparseable grade", "engine error"])
    )
    assert ungraded.height == 0
