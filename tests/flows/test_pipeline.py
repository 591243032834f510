"""Pipelined runs: the next batch is made while the one before is curated and committed, and the
run writes exactly what it writes unpipelined (also after a crash and a resume)."""

from __future__ import annotations

import threading

import polars as pl
import pytest

from synth.engines import ChatRequest, ScriptedEngine
from synth.engines.base import Completion
from synth.flows.evol_instruct import run_evol_instruct
from synth.schemas import DatasetConfig, EvolInstructConfig, ScriptedEngineConfig
from synth.shards import read_manifest, scan, verify
from tests.flows.test_evol_instruct_flow import NO_NEAR_DEDUP, write_source
from tests.generators.test_evol_instruct import EvolScript

pytestmark = pytest.mark.usefixtures("prefect_harness")


class Watched(EvolScript):
    """Evol-Instruct's script, noting the thread of every call; it fails every call of the
    instructions in `failing` (an engine gone for those batches)."""

    def __init__(self, failing: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.threads: list[str] = []
        self.prompts: list[str] = []
        self.failing = failing

    def __call__(self, request: ChatRequest) -> str | Completion:
        self.threads.append(threading.current_thread().name)
        self.prompts.append(" ".join(m.content for m in request.messages))
        if any(f in self.prompts[-1] for f in self.failing):
            raise RuntimeError("engine gone")
        return super().__call__(request)


def evolve(source, out, script: Watched, pipeline: bool, retries: int = 0):
    return run_evol_instruct(
        EvolInstructConfig(source=str(source), rounds=2, chunk_size=1),
        ScriptedEngineConfig(),
        DatasetConfig(path=str(out)),
        curation=NO_NEAR_DEDUP,
        model=ScriptedEngine(script),
        batch_retries=retries,
        pipeline=pipeline,
    )


def written(out) -> tuple[list[tuple], list[tuple], dict]:
    kept = scan(out).collect().sort("id").select("id", "instruction", "output", "batch", "round").rows()
    rejects = scan(out, "rejects").collect().sort("id").select("id", "stage", "reason", "batch").rows()
    (info,) = read_manifest(out).runs.values()
    return kept, rejects, info.state


def test_a_pipelined_run_makes_batches_ahead_and_writes_what_an_unpipelined_one_writes(tmp_path):
    source = write_source(tmp_path / "src.jsonl", n=5)
    plain, ahead = Watched(), Watched()
    first = evolve(source, tmp_path / "plain", plain, pipeline=False)
    second = evolve(source, tmp_path / "ahead", ahead, pipeline=True)

    assert written(tmp_path / "plain") == written(tmp_path / "ahead")  # records, rejects, rounds and tokens
    assert first["batches"] == second["batches"] == 5 and first["kept"] == second["kept"] == 15
    assert not first["engine"]["pipelined"] and second["engine"]["pipelined"]
    assert set(plain.threads) == {threading.current_thread().name}
    # Batch 0 is made in the flow's thread, every later one ahead of its turn.
    made_ahead = [t for t in ahead.threads if t.startswith("make-ahead")]
    assert len(made_ahead) == len(ahead.threads) * 4 // 5
    for summary in (first, second):
        use = summary["engine"]
        assert 0 < use["busy_seconds"] <= use["wall_seconds"] and 0 < use["busy_share"] <= 1


def test_a_pipelined_run_that_fails_resumes_to_what_an_uninterrupted_one_writes(tmp_path):
    source = write_source(tmp_path / "src.jsonl", n=5)
    evolve(source, tmp_path / "whole", Watched(), pipeline=True)

    out = tmp_path / "broken"
    with pytest.raises(Exception, match="engine gone"):
        evolve(source, out, Watched(failing=("topic number 3",)), pipeline=True)
    kept = written(out)[0]
    assert {row[3] for row in kept} == {0, 1, 2}  # batches 0-2 committed; batch 3 failed, nothing of it written
    assert verify(out) == []

    resumed = Watched()
    evolve(source, out, resumed, pipeline=True)
    assert written(out) == written(tmp_path / "whole")
    # Nothing committed was made again: the resumed run asked only about topics 3 and 4.
    assert resumed.prompts and not any(f"topic number {n}" in p for n in range(3) for p in resumed.prompts)
    assert scan(out).collect()["id"].n_unique() == scan(out).collect().height


def test_a_batch_made_ahead_that_failed_is_made_again_under_the_retries(tmp_path):
    source = write_source(tmp_path / "src.jsonl", n=3)

    class Flaky(Watched):
        def __init__(self) -> None:
            super().__init__()
            self.failed = False

        def __call__(self, request: ChatRequest) -> str | Completion:
            content = " ".join(m.content for m in request.messages)
            if "topic number 1" in content and not self.failed:
                self.failed = True
                raise RuntimeError("one hiccup")
            return super().__call__(request)

    script = Flaky()
    summary = evolve(source, tmp_path / "ds", script, pipeline=True, retries=1)
    assert script.failed and summary["batches"] == 3
    reference = tmp_path / "ref"
    evolve(source, reference, Watched(), pipeline=False)
    assert written(tmp_path / "ds") == written(reference)
    assert pl.DataFrame(written(reference)[0], orient="row").height == 9


def test_tokens_of_a_batch_made_ahead_are_handed_over_with_that_batch_only():
    from synth.engines.base import Metered

    meter = Metered(ScriptedEngine(lambda request: "one two three"))
    ask = [ChatRequest(messages=[{"role": "user", "content": "hi"}], tag="t")]
    meter.chat(ask)  # batch 4's own call, made in its turn
    with meter.counting_for(5):
        meter.chat(ask)
        meter.chat(ask)
    assert meter.take(batch=4) == {"t": {"prompt": 0, "completion": 3}}
    assert meter.take({"t": {"prompt": 1, "completion": 1}}, batch=5) == {"t": {"prompt": 1, "completion": 7}}
    assert meter.take(batch=5) == {} and meter.busy_seconds > 0


class WatchedSelfInstruct:
    """Self-Instruct's script, noting the thread of every call."""

    def __init__(self, per_prompt: int = 3, seeded: bool = False) -> None:
        from tests.conftest import SelfInstructScript
        from tests.flows.ray_scripts import _SeededSelfInstruct

        # Seeded: replies that depend on the request alone (not on how many came before it).
        self.script = _SeededSelfInstruct() if seeded else SelfInstructScript(per_prompt)
        self.threads: list[str] = []

    def __call__(self, request: ChatRequest) -> str | Completion:
        self.threads.append(threading.current_thread().name)
        return self.script(request)


def self_instruct(out, script, pipeline: bool, **config):
    from synth.flows.self_instruct import run_self_instruct
    from synth.schemas import SelfInstructConfig

    return run_self_instruct(
        SelfInstructConfig(prompts_per_batch=2, include_seed_tasks=False, **config),
        ScriptedEngineConfig(),
        DatasetConfig(path=str(out), shard_rows=4),
        model=ScriptedEngine(script),
        pipeline=pipeline,
    )


def self_instruct_written(out) -> tuple[list[tuple], list[tuple], dict]:
    kept = scan(out).collect().sort("id").select("id", "instruction", "input", "output", "batch", "demos").rows()
    rejects = scan(out, "rejects").collect().sort("id").select("id", "stage", "reason", "batch").rows()
    (info,) = read_manifest(out).runs.values()
    return kept, rejects, info.state


def test_self_instruct_makes_its_next_batch_ahead_on_the_pool_it_will_sample_and_writes_the_same(tmp_path):
    """Batch n+1 samples from the pool as batch n leaves it, which is known once batch n is made:
    it is made while batch n is curated and committed. Near the target the next batch's size
    follows the kept count, so it waits for the commit; the records, rejects and tokens are those
    of a run made one batch at a time."""
    plain, ahead = WatchedSelfInstruct(), WatchedSelfInstruct()
    first = self_instruct(tmp_path / "plain", plain, pipeline=False, num_records=40)
    second = self_instruct(tmp_path / "ahead", ahead, pipeline=True, num_records=40)
    assert self_instruct_written(tmp_path / "plain") == self_instruct_written(tmp_path / "ahead")
    assert first["batches"] == second["batches"] > 3
    assert not first["engine"]["pipelined"] and second["engine"]["pipelined"]
    assert set(plain.threads) == {threading.current_thread().name}
    made_ahead = [t for t in ahead.threads if t.startswith("make-ahead")]
    assert made_ahead and len(ahead.threads) == len(plain.threads)  # nothing made twice


def test_a_batch_made_ahead_on_a_guess_that_failed_is_made_again_from_the_real_plan(tmp_path, monkeypatch):
    """If batch n commits otherwise than it was made (here its retry admits other tasks), the
    batch made ahead on the old pool is dropped and made again: the run equals an unpipelined one."""
    from synth.flows import self_instruct as flow

    real = flow.SelfInstructJob.speculate
    guesses: list[int] = []

    def wrong_pool(self, run, spec, batch):
        guess = real(self, run, spec, batch)
        if guess is None:
            return None
        guesses.append(guess.batch)
        data = flow.SelfInstructSpec(guess.data.prompts, (*guess.data.pool, "a task nobody admitted"))
        return type(guess)(guess.batch, data)

    monkeypatch.setattr(flow.SelfInstructJob, "speculate", wrong_pool)
    self_instruct(tmp_path / "ahead", WatchedSelfInstruct(seeded=True), pipeline=True, num_records=30)
    monkeypatch.undo()
    self_instruct(tmp_path / "plain", WatchedSelfInstruct(seeded=True), pipeline=False, num_records=30)
    assert guesses
    kept, rejects, _ = self_instruct_written(tmp_path / "ahead")
    assert (kept, rejects) == self_instruct_written(tmp_path / "plain")[:2]
