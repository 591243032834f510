"""Humpback's self-training loop with scripted models and a stand-in trainer: who trains on what,
who grades what, what each record says of it, and that a second run changes nothing."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import polars as pl
import pytest

from synth.engines import ChatRequest, EngineConfigError, engines_opened
from synth.flows.self_training import run_self_training
from synth.schemas import BacktranslationConfig, DatasetConfig, OpenAIEngineConfig, ScriptedEngineConfig
from synth.schemas.self_train import AUGMENTED_SYSTEM, SEED_SYSTEM, SelfTrainConfig
from synth.shards import scan

DOCS = Path(__file__).parents[1] / "fixtures" / "docs"
_engines = itertools.count()
GRADE_CALLS: list[str] = []


def responder():
    """Each engine (one per model folder) grades differently, so iterations disagree."""
    shift = next(_engines)

    def reply(request: ChatRequest) -> str:
        text = request.messages[-1].content
        if request.json_schema is None:  # the trained backward model: the segment alone is the prompt
            assert len(request.messages) == 1 and "[TEXT START]" not in text
            return "Describe " + " ".join(text.split()[:4])
        GRADE_CALLS.append(text)
        digest = int(hashlib.sha256(text.encode()).hexdigest(), 16)
        return json.dumps({"rationale": "scripted", "score": 5 if (digest + shift) % 3 else 2})

    return reply


class Trainer:
    """Writes a folder with a training.json naming its data; records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, list]] = []

    def __call__(self, config, examples) -> Path:
        self.calls.append((config.out.name, config.direction, list(examples.items)))
        config.out.mkdir(parents=True, exist_ok=True)
        (config.out / "training.json").write_text(json.dumps({"data": examples.hash()}))
        return config.out


@pytest.fixture(autouse=True)
def fresh_engines():
    """Each test builds its own scripted engines; engines the session holds stay open."""
    with engines_opened():
        yield


def run(tmp_path, trainer, iterations=1):
    engine = ScriptedEngineConfig(responder="tests.flows.test_self_training:responder")
    loop = SelfTrainConfig(iterations=iterations)
    config = BacktranslationConfig(docs=str(DOCS), max_segments=8, chunk_size=3, min_score=5, self_train=loop)
    return run_self_training(config, engine, DatasetConfig(path=str(tmp_path / "out")), trainer=trainer)


def test_the_loop_trains_grades_and_regrades_every_candidate(tmp_path):
    trainer = Trainer()
    summary = run(tmp_path, trainer, iterations=1)
    work = tmp_path / "out.self-train"
    names = [(name, direction) for name, direction, _ in trainer.calls]
    assert names == [("backward", "backward"), ("m0", "forward"), ("m1", "forward")]

    (_, _, backward_data), (_, _, m0_data), (_, _, m1_data) = trainer.calls
    assert all(e.system == "" for e in backward_data)
    assert all(e.system == SEED_SYSTEM for e in m0_data)
    # M1: the seeds, plus what M0 kept, tagged as augmented data
    m0_kept = scan(work / "iteration-0").collect()
    assert m0_kept.height > 0 and (m0_kept["judge_score"] >= 5).all()
    augmented = m1_data[len(m0_data) :]
    assert m1_data[: len(m0_data)] == m0_data
    assert sorted(e.instruction for e in augmented) == sorted(m0_kept["instruction"])
    assert all(e.system == AUGMENTED_SYSTEM for e in augmented)

    # every candidate of iteration 0 (kept or graded down) was graded again by M1
    m0_candidates = (
        m0_kept.height
        + scan(work / "iteration-0", "rejects").filter(pl.col("stage") == "self-curation").collect().height
    )
    out = tmp_path / "out"
    final_run = summary["self_training"]["runs"][-1]
    kept = scan(out).filter(pl.col("run_id") == final_run).collect()
    graded_down = scan(out, "rejects").filter((pl.col("run_id") == final_run) & (pl.col("stage") == "self-curation"))
    assert kept.height + graded_down.collect().height == m0_candidates
    assert (kept["judge_score"] >= 5).all()
    for record in kept.iter_rows(named=True):
        assert len(record["grades"]) == 2 and record["grades"][-1] == record["judge_score"]
        assert record["model"] == str(work / "models" / "backward")  # which model wrote the instruction
        assert record["judge_model"] == str(work / "models" / "m1")  # which graded it last
        assert record["messages"][0] == {"role": "system", "content": AUGMENTED_SYSTEM}
        assert "augmented-data" in record["tags"]
    # the iterations disagree somewhere: M1 re-graded rather than copied M0's grade
    finals = scan(out, "rejects").filter(pl.col("stage") == "self-curation").collect()
    assert any(g[0] != g[-1] for g in [*kept["grades"], *finals["grades"]])

    seeds = scan(out).filter(pl.col("tags").list.contains("seed-data")).collect()
    assert seeds.height == len(m0_data)
    assert seeds["messages"].to_list()[0][0] == {"role": "system", "content": SEED_SYSTEM}


def test_a_second_run_grades_nothing_again_and_writes_nothing_twice(tmp_path):
    first = run(tmp_path, Trainer(), iterations=1)
    rows = scan(tmp_path / "out").collect().height
    rejects = scan(tmp_path / "out", "rejects").collect().height
    GRADE_CALLS.clear()
    again = run(tmp_path, Trainer(), iterations=1)
    assert GRADE_CALLS == []
    assert again["self_training"]["runs"] == first["self_training"]["runs"]
    assert scan(tmp_path / "out").collect().height == rows
    assert scan(tmp_path / "out", "rejects").collect().height == rejects


def test_no_iterations_writes_m0s_grades_and_the_seeds(tmp_path):
    trainer = Trainer()
    summary = run(tmp_path, trainer, iterations=0)
    assert [name for name, _, _ in trainer.calls] == ["backward", "m0"]
    out = scan(tmp_path / "out").collect()
    augmented = out.filter(pl.col("run_id") == summary["self_training"]["runs"][0])
    assert augmented.height > 0 and (augmented["judge_model"] == str(tmp_path / "out.self-train/models/m0")).all()
    assert out.filter(pl.col("tags").list.contains("seed-data")).height > 0


def test_a_server_engine_is_refused_before_anything_trains(tmp_path):
    trainer = Trainer()
    config = BacktranslationConfig(docs=str(DOCS))
    with pytest.raises(EngineConfigError, match="in-process vLLM"):
        run_self_training(
            config, OpenAIEngineConfig(base_url="http://127.0.0.1:1/v1", model="m"),
            DatasetConfig(path=str(tmp_path / "out")), trainer=trainer,
        )  # fmt: skip
    assert trainer.calls == []


def test_the_command_refuses_a_server_engine_and_a_backward_engine_with_self_train(tmp_path):
    from typer.testing import CliRunner

    from synth.cli import app

    server = tmp_path / "server.toml"
    server.write_text('kind = "openai"\nmodel = "m"\nbase_url = "http://127.0.0.1:1/v1"\n')
    out = tmp_path / "out"
    base = ["generate", "backtranslate", "--docs", str(DOCS), "--out", str(out), "--self-train"]
    refused = CliRunner().invoke(app, [*base, "--engine-config", str(server)])
    assert refused.exit_code == 2 and "server.toml" in refused.output and "in-process vLLM" in refused.output
    both = CliRunner().invoke(app, [*base, "--backward-engine-config", str(server)])
    assert both.exit_code == 2 and "the backward model is trained" in " ".join(both.output.split())
    assert not out.exists()


def test_the_command_hands_the_loop_settings_over_and_refuses_them_without_self_train(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import synth.flows.self_training as module
    from synth.cli import app

    seen = []
    monkeypatch.setattr(module, "run_self_training", lambda config, *a, **k: seen.append(config) or {})
    engine = tmp_path / "engine.yaml"
    engine.write_text("kind: scripted\n")
    base = ["generate", "backtranslate", "--docs", str(DOCS), "--out", str(tmp_path / "out")]
    loop = ["--iterations", "1", "--train-steps", "5", "--learning-rate", "0.001"]
    alone = CliRunner().invoke(app, [*base, *loop])
    assert alone.exit_code == 2 and "--iterations is a setting of the self-training loop" in alone.output
    CliRunner().invoke(app, [*base, *loop, "--self-train", "--engine-config", str(engine)])
    [config] = seen  # the fake run's empty summary ends the command
    assert (config.self_train.iterations, config.self_train.max_steps) == (1, 5)
    assert config.self_train.learning_rate == 0.001 and config.self_train.epochs == 3.0  # given, and the default


def test_the_default_loop_is_the_papers_one_iteration():
    assert SelfTrainConfig().iterations == 1


def test_every_seed_pair_trains_even_those_the_demo_rules_would_skip(tmp_path):
    pairs = [
        {"instruction": "Summarize the following paragraph.", "output": "Short."},  # demo rules: unseen text, short
        {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"},  # an input
        {"instruction": "Explain why the sea is salty.", "output": "Rivers carry dissolved salts into it. " * 3},
    ]
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("\n".join(json.dumps(p) for p in pairs))
    trainer = Trainer()
    engine = ScriptedEngineConfig(responder="tests.flows.test_self_training:responder")
    config = BacktranslationConfig(
        docs=str(DOCS), seeds=str(seeds), max_segments=2, chunk_size=2, self_train=SelfTrainConfig(iterations=0)
    )
    run_self_training(config, engine, DatasetConfig(path=str(tmp_path / "out")), trainer=trainer)
    (_, _, backward_data), (_, _, m0_data) = trainer.calls
    assert [(e.instruction, e.output) for e in m0_data] == [
        ("Summarize the following paragraph.", "Short."),
        ("Translate to French.\n\nGood morning", "Bonjour"),
        ("Explain why the sea is salty.", pairs[2]["output"]),
    ]
    assert len(backward_data) == 3
    seed_rows = scan(tmp_path / "out").filter(pl.col("tags").list.contains("seed-data")).collect()
    assert seed_rows.height == 3
