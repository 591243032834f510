"""The self-training loop on the real stack: LoRA-tuned backward model and graders from the embedded
model, served by the in-process vLLM engine (a few training steps each: this tests the plumbing,
not the models' quality)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from synth.flows.self_training import run_self_training
from synth.schemas import BacktranslationConfig, DatasetConfig, VLLMEngineConfig
from synth.schemas.config import SamplingConfig
from synth.schemas.self_train import SelfTrainConfig
from synth.shards import scan
from synth.training import read_report

pytestmark = pytest.mark.engine

DOCS = Path(__file__).parents[1] / "fixtures" / "docs"
SEEDS = [
    ("How do I keep a cast-iron pan from rusting?", "Dry it right after washing and rub in a thin coat of oil."),
    ("What is a haiku?", "A short Japanese poem of three lines with five, seven and five syllables."),
    ("Give one tip for a better night's sleep.", "Go to bed and get up at the same time every day, weekends included."),
    ("Why do leaves change colour in autumn?", "Chlorophyll breaks down, revealing yellow and red pigments."),
]


def test_trained_models_write_grade_and_regrade_real_segments(tmp_path):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("\n".join(json.dumps({"instruction": i, "output": o}) for i, o in SEEDS))
    # enough steps at a high rate for the backward model to learn to ask short questions and stop
    loop = SelfTrainConfig(iterations=1, max_steps=12, learning_rate=2e-3, batch_size=4, max_length=256)
    config = BacktranslationConfig(
        docs=str(DOCS), seeds=str(seeds), max_segments=3, min_score=4,
        augment_sampling=SamplingConfig(temperature=0.7, top_p=0.95, max_tokens=48),
        grade_sampling=SamplingConfig(temperature=0.0, top_p=1.0, max_tokens=96), self_train=loop,
    )  # fmt: skip
    # Each model's engine core in this process where it can be (the grader beside the backward
    # model gets a process of its own): on a CPU it loads in about half the time.
    engine = VLLMEngineConfig(cpu_kvcache_gib=1, max_model_len=1024, in_process=True)
    summary = run_self_training(config, engine, DatasetConfig(path=str(tmp_path / "out")))

    work = tmp_path / "out.self-train" / "models"
    for name, direction in (("backward", "backward"), ("m0", "forward"), ("m1", "forward")):
        report = read_report(work / name)
        assert report is not None and report.direction == direction and report.steps == 12
    final = summary["self_training"]["runs"][-1]
    kept = scan(tmp_path / "out").filter(pl.col("run_id") == final).collect()
    graded = scan(tmp_path / "out", "rejects").filter(
        (pl.col("run_id") == final) & (pl.col("stage") == "self-curation")
    )
    candidates = pl.concat([kept.select("instruction", "model", "judge_model", "grades"),
                            graded.select("instruction", "model", "judge_model", "grades").collect()])  # fmt: skip
    assert candidates.height > 0
    assert (candidates["model"] == str(work / "backward")).all()  # the trained backward model wrote them
    assert all(text.strip() for text in candidates["instruction"])
    # each candidate M0 graded was graded again by M1 (an unparseable grade is a reject with its reply)
    regraded = candidates.filter(pl.col("grades").list.len() == 2)
    assert regraded.height > 0 and (regraded["judge_model"] == str(work / "m1")).all()
    seed_rows = scan(tmp_path / "out").filter(pl.col("tags").list.contains("seed-data")).collect()
    assert seed_rows.height == len(SEEDS)  # every seed pair is usable (none under 41 characters)
