"""Code generation through the real vLLM engine on the embedded model and the real sandbox.

The runs use the `small-model` profile (three demonstrations), with two answers per task and
replies capped at 256 tokens: the paper's 8 demonstrations, 10 answers and 1536-token replies take
many minutes here. The 135M model rarely writes code that passes its own tests, so the test checks
that every seed and every answer is accounted for, with the stage and kind it ended in, not how many
records were kept.
"""

from __future__ import annotations

from collections import Counter

import pytest

from synth.flows.code import run_self_code_align
from synth.sandbox import KINDS
from synth.schemas import DatasetConfig, VLLMEngineConfig
from synth.schemas.code import SelfCodeAlignConfig
from synth.shards import read_manifest, scan, verify
from tests.conftest import capped

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("prefect_harness")]


def test_the_embedded_model_writes_tasks_and_answers_that_run_in_the_sandbox(tmp_path, vllm_engine):
    config = capped(
        SelfCodeAlignConfig(profile="small-model", num_records=50, batch_size=3, max_batches=1, samples=2), 256
    )
    summary = run_self_code_align(
        config, VLLMEngineConfig(), DatasetConfig(path=str(tmp_path / "code")), model=vllm_engine
    )
    path = tmp_path / "code"
    assert verify(path) == [] and summary["batches"] == 1
    (run,) = read_manifest(path).runs.values()
    funnel = run.state["funnel"]
    kept, rejects = scan(path).collect(), scan(path, "rejects").collect()
    assert funnel["seeds"] == 3 and run.kept == kept.height
    # What the generator kept either was written or the curation chain dropped it, with its reason.
    curated = rejects.filter(rejects["phase"] == "curation")
    assert funnel["kept"] == kept.height + curated.height and (curated["reason"] != "").all()
    # The model's tasks reached the response step; every answer ended in one known way.
    answered = rejects.filter(rejects["stage"].is_in(["execution", "parse", "dedup"]))
    assert answered.height + kept.height > 0 and (answered["instruction"] != "").all()
    executed = rejects.filter(rejects["stage"] == "execution")
    assert set(executed["reason"]) <= set(KINDS) - {"passed"}
    ran = executed["code"].struct.field("execution")
    assert ran.to_list() == executed["reason"].to_list() and (executed["detail"] != "").all()
    assert set(kept["code"].struct.field("execution").to_list()) <= {"passed"}
    # Nothing vanished: each seed either failed before its answers or its answers all ended somewhere.
    stages = Counter(rejects["stage"].to_list())
    assert sum(stages.values()) + kept.height >= 3
    assert run.state["tokens"]["code_response"]["completion"] > 0


def test_the_embedded_model_writes_oss_instruct_problems_from_real_snippets(tmp_path, vllm_engine):
    from synth.flows.code import run_oss_instruct
    from synth.schemas.code import OSSInstructConfig

    config = capped(OSSInstructConfig(profile="small-model", num_records=50, batch_size=4, max_batches=1), 384)
    run_oss_instruct(config, VLLMEngineConfig(), DatasetConfig(path=str(tmp_path / "oss")), model=vllm_engine)
    path = tmp_path / "oss"
    assert verify(path) == []
    (run,) = read_manifest(path).runs.values()
    kept, rejects = scan(path).collect(), scan(path, "rejects").collect()
    assert kept.height + rejects.height == 4 == run.state["funnel"]["seeds"]
    assert set(rejects["stage"].to_list()) <= {"parse", "decontamination", "heuristic", "dedup"}
    assert (rejects["reason"] != "").all()
    # Every seed is real lines of a file of the standard library, named with its place.
    both = [*kept.iter_rows(named=True), *rejects.iter_rows(named=True)]
    assert all(r["source_doc"].endswith(".py") and 1 <= r["source_end"] - r["source_start"] + 1 <= 15 for r in both)
    assert (kept["instruction"] != "").all() and (kept["output"] != "").all()
