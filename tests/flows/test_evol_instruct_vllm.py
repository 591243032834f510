"""Evol-Instruct through the real vLLM engine on the embedded model.

The run uses the `small-model` profile: the paper's settings (temperature 1, up to 2048 tokens per
rewrite and response) are what the embedded model needs least and would take many minutes here.
"""

from __future__ import annotations

from collections import Counter

import polars as pl
import pytest

from synth.flows.evol_instruct import run_evol_instruct
from synth.generators.seeds import DEFAULT_SEEDS
from synth.schemas import DatasetConfig, EvolInstructConfig, VLLMEngineConfig
from synth.shards import read_manifest, scan, verify

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("prefect_harness")]

SEEDS = 4  # two chunks of two: enough for pipelining, lineage over two rounds and eliminations


def test_real_engine_evolves_seed_tasks_with_lineage_and_an_accounted_funnel(tmp_path, vllm_engine):
    summary = run_evol_instruct(
        EvolInstructConfig(
            source=str(DEFAULT_SEEDS), rounds=2, limit=SEEDS, chunk_size=SEEDS // 2, profile="small-model"
        ),
        VLLMEngineConfig(),
        DatasetConfig(path=str(tmp_path / "evol")),
        model=vllm_engine,
    )
    assert verify(tmp_path / "evol") == []
    # Two chunks: the second was made by the engine in the background while the first was committed.
    assert summary["batches"] == 2 and summary["engine"]["pipelined"] and summary["engine"]["busy_seconds"] > 0
    rounds = read_manifest(tmp_path / "evol").runs[summary["run_id"]].state["rounds"]
    assert set(rounds) == {"0", "1", "2"}
    for funnel in rounds.values():
        assert funnel["in"] == SEEDS == funnel["evolved"] + sum(funnel["eliminated"].values())
    rejects = scan(tmp_path / "evol", "rejects").collect()
    # Every elimination is a reject: of the evolution stage, or of the curation rules that screen
    # each round (counted in the funnel as "STAGE: reason"); the curation chain may drop records
    # too (a response cut off at the token limit, say), each with its stage and reason.
    eliminated = sum(sum(f["eliminated"].values()) for f in rounds.values())
    screened = Counter(
        reason.split(": ", 1)[0]
        for f in rounds.values()
        for reason, n in f["eliminated"].items()
        for _ in range(n)
        if reason.split(": ", 1)[0] in {"heuristic", "language", "decontamination"}
    )
    assert rejects.filter(pl.col("stage") == "evolution").height == eliminated - sum(screened.values())
    for stage, n in screened.items():
        assert rejects.filter(pl.col("stage") == stage).height >= n
    curated = rejects.filter(pl.col("stage") != "evolution")
    assert set(curated["stage"]) <= {"heuristic", "dedup"} and (curated["reason"] != "").all()
    assert (curated["phase"] == "curation").all()
    kept = scan(tmp_path / "evol").collect()
    assert kept.height == summary["kept"]
    seed_ids = {f"seed_task_{i}" for i in range(SEEDS)}
    # Round 0: the seed tasks themselves, with their own first instance.
    zero = kept.filter(pl.col("round") == 0)
    assert sorted(zero["root_id"]) == sorted(seed_ids)
    assert kept.filter(pl.col("round") >= 1).height > 0  # the embedded model gets evolutions through with seed 0
    assert set(kept["root_id"]) <= seed_ids
    # round 1 evolves the round-0 records: its parents are their (content) ids, or a seed's own id
    # where no round-0 record was written for it
    parents = kept.filter(pl.col("round") == 1)["parent_id"]
    assert parents.is_in([*zero["id"].to_list(), *seed_ids]).all() and parents.is_in(zero["id"].to_list()).any()
    assert kept["output"].str.len_chars().min() > 0
