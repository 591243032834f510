"""`synth recycle` through the real vLLM engine on the embedded model: the same model is teacher
and student (the default), in the `small-model` profile."""

from __future__ import annotations

import math

import polars as pl
import pytest

from synth.flows.reflection import run_reflection
from synth.generators.seeds import DEFAULT_SEEDS
from synth.schemas import DatasetConfig, VLLMEngineConfig
from synth.schemas.config import SamplingConfig
from synth.schemas.reflection import ReflectionConfig
from synth.shards import scan, verify

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("prefect_harness")]


def test_the_embedded_model_reflects_and_scores_every_pair_with_a_reason_for_each_reject(tmp_path, vllm_engine):
    short = SamplingConfig(temperature=0.0, top_p=1.0, max_tokens=128)  # the profile's 512 ramble on a CPU
    config = ReflectionConfig(source=str(DEFAULT_SEEDS), limit=2, profile="small-model", teacher_sampling=short)
    summary = run_reflection(config, VLLMEngineConfig(), DatasetConfig(path=str(tmp_path / "r")), model=vllm_engine)
    assert verify(tmp_path / "r") == [] and summary["recycled"]["pairs"] == 2
    kept = scan(tmp_path / "r").collect()
    rejects = scan(tmp_path / "r", "rejects").collect()
    assert set(kept["parent_id"]) | set(rejects["parent_id"]) == {"seed_task_0", "seed_task_1"}
    assert (rejects["reason"] != "").all() and rejects["stage"].is_in(["reflection", "heuristic", "dedup"]).all()
    blocks = pl.concat([kept.select("reflection"), rejects.select("reflection")])["reflection"]
    # The student scored every original pair through the engine's log-probabilities.
    originals = [b for b in blocks.to_list() if b is not None and b["original_ifd"] is not None]
    assert originals and all(math.isfinite(b["original_ifd"]) and b["original_ifd"] > 0 for b in originals)
    assert all(b["original_r_ifd"] > 0 for b in originals)
    assert all(b["teacher"] == b["student"] == vllm_engine.model_name for b in blocks.to_list() if b is not None)
    for row in kept.iter_rows(named=True):  # a written variant passed the rule's last check
        assert row["reflection"]["ifd"] < 1 and row["reflection"]["r_ifd"] < 1
