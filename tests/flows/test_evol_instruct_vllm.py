"""Evol-Instruct through the real vLLM engine on the embedded model."""

from __future__ import annotations

import polars as pl
import pytest

from synth.flows.evol_instruct import run_evol_instruct
from synth.generators.seeds import DEFAULT_SEEDS
from synth.schemas import DatasetConfig, EvolInstructConfig, VLLMEngineConfig
from synth.shards import read_manifest, scan, verify

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("prefect_harness")]


def test_real_engine_evolves_seed_tasks_with_lineage_and_an_accounted_funnel(tmp_path, vllm_engine):
    summary = run_evol_instruct(
        EvolInstructConfig(source=str(DEFAULT_SEEDS), rounds=2, limit=6),
        VLLMEngineConfig(),
        DatasetConfig(path=str(tmp_path / "evol")),
        model=vllm_engine,
    )
    assert verify(tmp_path / "evol") == []
    rounds = read_manifest(tmp_path / "evol").runs[summary["run_id"]].state["rounds"]
    for funnel in rounds.values():
        assert funnel["in"] == 6 == funnel["evolved"] + sum(funnel["eliminated"].values())
    rejects = scan(tmp_path / "evol", "rejects").collect()
    assert rejects.filter(pl.col("stage") != "evolution").height == 0
    kept = scan(tmp_path / "evol").collect()
    assert kept.height == summary["kept"]
    assert kept.height > 0  # the embedded model gets evolutions through with seed 0
    seed_ids = {f"seed_task_{i}" for i in range(6)}
    assert set(kept["root_id"]) <= seed_ids
    assert kept.filter(pl.col("round") == 1)["parent_id"].is_in(list(seed_ids)).all()
    assert kept["output"].str.len_chars().min() > 0
