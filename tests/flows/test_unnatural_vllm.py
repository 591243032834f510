"""Unnatural Instructions through the real vLLM engine on the embedded model (the paper's
settings, replies capped): kept records and rejects, each reject with its stage and reason."""

from __future__ import annotations

import time

import pytest

from synth.flows.unnatural import run_unnatural
from synth.schemas import DatasetConfig, VLLMEngineConfig
from synth.schemas.unnatural import UnnaturalConfig
from synth.shards import scan, verify
from tests.conftest import capped

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("prefect_harness")]


def test_the_embedded_model_writes_unnatural_records_and_rejects_with_reasons(tmp_path, vllm_engine):
    config = capped(UnnaturalConfig(num_records=10, batch_size=10, paraphrases=1), 96)
    started = time.perf_counter()
    summary = run_unnatural(config, VLLMEngineConfig(), DatasetConfig(path=str(tmp_path / "u")), model=vllm_engine)
    print(f"unnatural on the embedded model: {time.perf_counter() - started:.1f}s, {summary['kept']} kept")
    assert verify(tmp_path / "u") == [] and summary["prompts"] == 10
    kept = scan(tmp_path / "u").collect()
    rejects = scan(tmp_path / "u", "rejects").collect()
    print(rejects.group_by("phase", "stage", "reason").len().rows())
    assert kept.height > 0 and rejects.height > 0
    assert (rejects["stage"] != "").all() and (rejects["reason"] != "").all()
    assert all(b["constraints"] for b in kept["unnatural"].to_list())
