"""CodecLM through the real vLLM engine on the embedded model, the same model as strong and target
(its small-model profile, replies capped): a handful of seeds end as kept records or as rejects, each
reject with its stage and reason, and whatever reached the contrastive filter carries its scores."""

from __future__ import annotations

import time

import pytest

from synth.flows.codeclm import run_codeclm
from synth.schemas import DatasetConfig, VLLMEngineConfig
from synth.schemas.codeclm import CodeclmConfig
from synth.shards import scan, verify
from tests.conftest import capped

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("prefect_harness")]


def test_the_embedded_model_as_strong_and_target_writes_codeclm_records_and_rejects(tmp_path, vllm_engine):
    config = capped(
        CodeclmConfig(profile="small-model", limit=4, instructions_per_metadata=2, iterations=2, chunk_size=4), 128
    )
    started = time.perf_counter()
    summary = run_codeclm(config, VLLMEngineConfig(), DatasetConfig(path=str(tmp_path / "c")), model=vllm_engine)
    counts = summary["codeclm"]
    print(f"codeclm on the embedded model: {time.perf_counter() - started:.1f}s, {summary['kept']} kept, {counts}")
    assert verify(tmp_path / "c") == [] and counts["seeds"] == 4
    kept = scan(tmp_path / "c").collect()
    rejects = scan(tmp_path / "c", "rejects").collect()
    print(rejects.group_by("phase", "stage", "reason").len().rows())
    assert kept.height + rejects.height > 0 and rejects.height > 0
    assert (rejects["stage"] != "").all() and (rejects["reason"] != "").all()
    blocks = [b for b in [*kept["codeclm"].to_list(), *rejects["codeclm"].to_list()] if b]
    assert all(b["use_case"] and b["skills"] for b in blocks)
    assert all(b["gap"] is not None for b in kept["codeclm"].to_list())
