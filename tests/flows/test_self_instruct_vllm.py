"""Self-Instruct through the real vLLM engine on the embedded model, in process and by the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import polars as pl
import pytest

from synth.flows.self_instruct import run_self_instruct
from synth.schemas import DatasetConfig, SelfInstructConfig, VLLMEngineConfig
from synth.shards import read_manifest, scan, verify
from tests.conftest import capped

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("prefect_harness")]


def test_cli_generates_a_dataset_on_the_embedded_model(tmp_path):
    env = {**os.environ, "COLUMNS": "200"}
    cmd = [sys.executable, "-m", "synth.cli", "generate", "self-instruct", "--num", "3", "--prompts-per-batch", "4", "--max-batches", "1", "--out", str(tmp_path / "demo")]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "records kept" in out.stdout and str(tmp_path / "demo") in out.stdout
    manifest = read_manifest(tmp_path / "demo")
    assert manifest.rows("kept") + manifest.rows("rejects") > 0
    assert verify(tmp_path / "demo") == []


def test_a_paper_run_on_the_embedded_model_sends_the_papers_prompts_and_writes_a_dataset_with_provenance(
    tmp_path, vllm_engine, monkeypatch
):
    """The paper's settings reach the embedded model through the flow: instance prompts hold the
    paper's worked tasks (16 output-first, 11 input-first) and ask for up to 5 instances, each reply
    becomes records or instance rejects with a reason, records name their 8 demos, and the dataset
    checks out with each record's provenance. (How many instances the tiny model writes per task
    varies from run to run; the parse of several is tested with scripted replies.)"""
    sent: list = []
    chat = vllm_engine.chat

    def recording(requests):
        sent.extend(requests)
        return chat(requests)

    monkeypatch.setattr(vllm_engine, "chat", recording)
    # One batch of four prompts: the paper's instance prompts are long to prefill on a CPU.
    config = SelfInstructConfig(num_records=4, prompts_per_batch=4, max_batches=1, include_seed_tasks=False)
    summary = run_self_instruct(config, VLLMEngineConfig(), DatasetConfig(path=str(tmp_path / "ds")), model=vllm_engine)
    instance_requests = [r for r in sent if r.tag.startswith("self_instruct_instances")]
    assert instance_requests, [r.tag for r in sent]
    for request in instance_requests:
        worked = request.messages[-1].content.count("Task:") - 1  # the last one is the new task's
        assert worked == (16 if request.tag.endswith("output_first") else 11), request.tag
        assert request.sampling.max_tokens == config.instance_sampling.max_tokens
    assert verify(tmp_path / "ds") == []
    manifest = read_manifest(tmp_path / "ds")
    assert manifest.rows("kept") == summary["kept"] and manifest.rows("rejects") == summary["rejected"]
    kept, rejects = scan(tmp_path / "ds").collect(), scan(tmp_path / "ds", "rejects").collect()
    assert rejects.filter(pl.col("stage").is_null() | (pl.col("reason") == "")).height == 0
    instanced = rejects.filter(pl.col("stage") == "instance")
    assert kept.height + instanced.height > 0
    # The embedded model does produce new tasks with this seed (seen in every run so far).
    assert kept.height > 0
    row = kept.row(0, named=True)
    assert row["model"] == "SmolLM2-135M-Instruct" and row["generator"] == "self_instruct"
    assert row["output"] and row["messages"][-1]["content"] == row["output"]
    assert row["novelty_rouge_l"] <= 0.7 and row["template_hash"]
    assert all(len(demos) == 8 for demos in kept["demos"].to_list())
    per_task = Counter(kept["instruction"].to_list())
    assert config.instances_per_task == 5 and all(n <= 5 for n in per_task.values())


def test_a_chinese_run_on_the_embedded_model_keeps_chinese_tasks_with_language_and_ability(tmp_path, vllm_engine):
    """Chinese seeds and templates (`language="zh"`) through the real engine: the tasks the model
    writes are parsed (the tiny model's quality is not the point), and what is kept carries its
    detected language and an ability tag; everything else is a reject with a reason."""
    from synth.filters.abilities import ABILITIES

    # One batch, replies of at most 256 tokens: enough for a list of tasks and their instances.
    config = SelfInstructConfig(
        language="zh",
        profile="small-model",
        num_records=3,
        prompts_per_batch=4,
        max_batches=1,
        include_seed_tasks=False,
    )
    summary = run_self_instruct(
        capped(config, 256),
        VLLMEngineConfig(),
        DatasetConfig(path=str(tmp_path / "zh")),
        model=vllm_engine,
    )
    assert verify(tmp_path / "zh") == []
    kept = scan(tmp_path / "zh").collect()
    rejects = scan(tmp_path / "zh", "rejects").collect()
    assert kept.height == summary["kept"] and (rejects["reason"] != "").all()
    han = pl.col("instruction").str.contains(r"\p{Han}")
    # Chinese tasks came out of the model's replies and went on to instances or curation.
    assert (
        kept.height
        + rejects.filter(
            han & pl.col("stage").is_in(["instance", "language", "ability", "dedup", "heuristic", "classification"])
        ).height
        > 0
    )
    assert kept.filter(~han).height == 0
    assert set(kept["language"]) <= {"zh"} and set(kept["ability"]) <= set(ABILITIES)
    assert (
        kept["ability"].is_null().sum() == 0
        and read_manifest(tmp_path / "zh").runs[summary["run_id"]].config["language"] == "zh"
    )
