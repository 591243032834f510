"""Curation with the judge on the real vLLM engine and the embedded model."""

from __future__ import annotations

import json

import polars as pl
import pytest

from synth.flows.curate import curate_file
from synth.schemas.curation import CurationConfig, JudgeConfig
from synth.shards import scan, verify

pytestmark = pytest.mark.engine


def test_real_engine_judges_every_record_and_explains_each_drop(tmp_path, vllm_engine):
    rows = [
        {"instruction": "What is the capital of France?", "output": "The capital of France is Paris."},
        {
            "instruction": "Give two tips for sleeping better at night.",
            "output": "Keep a regular bedtime and avoid screens for an hour before sleep.",
        },
        {
            "instruction": "Explain photosynthesis in one sentence.",
            "output": "Plants use sunlight, water and carbon dioxide to make sugar and release oxygen.",
        },
        {"instruction": "Translate 'good morning' into Spanish.", "output": "Banana."},
    ]
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(json.dumps(r) for r in rows))
    summary = curate_file(
        source, tmp_path / "ds", CurationConfig(judge=JudgeConfig(enabled=True, threshold=3)), engine=vllm_engine
    )
    assert verify(tmp_path / "ds") == []
    kept = scan(tmp_path / "ds").collect()
    rejects = scan(tmp_path / "ds", "rejects").collect()
    assert kept.height + rejects.height == 4 == summary["records_in"]
    judged = pl.concat(
        [
            kept.select("judge_score", "judge_model", "judge_rubric"),
            rejects.select("judge_score", "judge_model", "judge_rubric"),
        ]
    )
    assert judged["judge_model"].to_list() == ["SmolLM2-135M-Instruct"] * 4 and judged["judge_rubric"].n_unique() == 1
    assert judged["judge_score"].is_not_null().all()  # structured output: every reply parsed
    assert (kept["judge_score"] >= 3).all()
    assert rejects.filter(pl.col("judge_score") >= 3).height == 0
    # Each drop says why: the judge's stage, its score against the threshold, and its rationale.
    for drop in rejects.select("stage", "reason", "judge_score", "judge_rationale").iter_rows(named=True):
        assert drop["stage"] == "judge" and drop["reason"] == f"score {int(drop['judge_score'])} below 3", drop
        assert drop["judge_rationale"].strip(), drop
