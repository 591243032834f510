"""The Self-Instruct flow end to end on a scripted engine: targets, resume, runs side by side."""

from __future__ import annotations

import polars as pl
import pytest

from synth.engines import ChatRequest, EngineError, ScriptedEngine
from synth.flows.job_kinds import STALL_BATCHES
from synth.flows.self_instruct import run_self_instruct, self_instruct_flow
from synth.schemas import DatasetConfig, ScriptedEngineConfig, SelfInstructConfig
from synth.shards import read_manifest, scan, verify
from tests.conftest import SelfInstructScript

pytestmark = pytest.mark.usefixtures("prefect_harness")
ENGINE = ScriptedEngineConfig()


def run(path, model=None, retries: int = 0, **config):
    config.setdefault("prompts_per_batch", 2)
    config.setdefault("include_seed_tasks", False)  # these tests follow the generated run alone
    return run_self_instruct(
        SelfInstructConfig(**config),
        ENGINE,
        DatasetConfig(path=str(path), shard_rows=4),
        model=model or ScriptedEngine(SelfInstructScript()),
        batch_retries=retries,
        retry_delays=[0],
    )


def contents(path) -> tuple[list, list]:
    kept = scan(path).select("id", "instruction", "input", "output", "batch").sort("id").collect().rows()
    rejects = scan(path, "rejects").select("id", "stage", "reason", "batch").sort("id").collect().rows()
    return kept, rejects


def test_run_keeps_records_until_the_target_and_writes_a_valid_dataset(tmp_path):
    summary = run(tmp_path / "ds", num_records=10)
    assert summary["reached_target"] and summary["kept"] >= 10
    manifest = read_manifest(tmp_path / "ds")
    [info] = manifest.runs.values()
    assert info.status == "finished" and info.kept == summary["kept"]
    assert manifest.rows("kept") == summary["kept"]
    assert verify(tmp_path / "ds") == []
    frame = pl.read_parquet(tmp_path / "ds" / "data" / "*.parquet")
    assert frame.height == summary["kept"] and frame["id"].n_unique() == frame.height


def test_the_seed_tasks_instances_are_written_once_as_a_run_of_their_own(tmp_path):
    from synth.generators.seeds import load_seed_tasks

    seeds = load_seed_tasks()
    summary = run(tmp_path / "ds", num_records=4, include_seed_tasks=True)
    seed_rows = scan(tmp_path / "ds").filter(pl.col("run_id") == summary["seed_run"]).collect()
    expected = sorted((s.instruction, i.input, i.output) for s in seeds for i in s.instances)
    assert sorted(seed_rows.select("instruction", "input", "output").rows()) == expected
    assert set(seed_rows["operation"]) == {"seed"} and set(seed_rows["source_id"]) == {s.id for s in seeds}
    assert all(set(tags) == {"self-instruct", "seed-data"} for tags in seed_rows["tags"])
    manifest = read_manifest(tmp_path / "ds")
    assert set(manifest.runs) == {summary["seed_run"], summary["run_id"]}
    assert summary["seed_records"] == len(expected)
    # re-running (or extending) the same command writes the seeds no second time
    again = run(tmp_path / "ds", num_records=8, include_seed_tasks=True)
    assert again["seed_run"] == summary["seed_run"]
    assert scan(tmp_path / "ds").filter(pl.col("run_id") == summary["seed_run"]).collect().height == len(expected)


def test_last_batch_is_sized_from_the_yield_so_the_target_is_not_overshot_much(tmp_path):
    summary = run(tmp_path / "ds", num_records=7, prompts_per_batch=8)  # 3 records per prompt
    assert 7 <= summary["kept"] < 7 + 8 * 3


def test_a_small_target_starts_with_a_small_batch_and_does_not_write_a_whole_batch(tmp_path):
    # The script keeps three records per prompt: a full first batch of 16 prompts would keep 48.
    summary = run(tmp_path / "ds", num_records=20, prompts_per_batch=16)
    info = read_manifest(tmp_path / "ds").runs[summary["run_id"]]
    first = scan(tmp_path / "ds").filter(pl.col("batch") == 0).collect().height
    assert first < 20 and summary["kept"] < 40 and summary["reached_target"]
    assert info.state["prompts_sent"] < 16


def test_batches_grow_at_most_twofold_while_the_yield_is_a_rough_guess():
    from synth.flows.self_instruct import prompts_for_batch

    config = SelfInstructConfig(num_records=20, prompts_per_batch=16)
    assert prompts_for_batch(config, kept=0, prompts_sent=0) == 3  # about 20 / 8
    # Two kept from three prompts says 34 prompts are needed; the batch grows to 6, not 16.
    assert prompts_for_batch(config, kept=2, prompts_sent=3, last=3) == 6
    assert prompts_for_batch(config, kept=0, prompts_sent=3, last=3) == 6
    assert prompts_for_batch(config, kept=18, prompts_sent=9, last=6) == 4  # near the target: the floor


def test_budget_stops_a_run_that_cannot_reach_its_target(tmp_path):
    def refuses(request: ChatRequest) -> str:
        return ""

    summary = run(tmp_path / "ds", model=ScriptedEngine(refuses), num_records=5, max_batches=3)
    assert not summary["reached_target"] and summary["batches"] == 3 and summary["kept"] == 0
    # One prompt in the first batch (a target of 5 needs about one), then full batches of two.
    assert summary["rejects_by_reason"] == {"parse": {"no numbered tasks in reply": 1 + 2 + 2}}
    assert summary["stopped"] == "the batch budget the config sets (max_batches 3) is spent; 0 of 5 records kept"


def test_a_run_without_a_budget_goes_past_fifty_batches_to_its_target(tmp_path):
    # One prompt a batch keeps three records: 160 records take 54 batches, more than the 50 that
    # were once a budget nobody had asked for (such a run stopped at a third of its target).
    summary = run(tmp_path / "ds", num_records=160, prompts_per_batch=1)
    assert summary["reached_target"] and summary["kept"] >= 160 and summary["batches"] > 50
    assert summary["stopped"].startswith("target reached")


def test_a_run_that_keeps_nothing_stops_on_a_stall_and_says_so(tmp_path, caplog):
    def refuses(request: ChatRequest) -> str:
        return ""

    with caplog.at_level("WARNING"):
        summary = run(tmp_path / "ds", model=ScriptedEngine(refuses), num_records=5)
    assert not summary["reached_target"] and summary["kept"] == 0
    assert summary["batches"] == STALL_BATCHES
    line = f"stalled: the last {STALL_BATCHES} batches kept no record; 0 of 5 records kept"
    assert summary["stopped"] == line
    assert f"run stopped before its target: {line}" in caplog.text


def test_a_stall_counts_batches_in_a_row_and_a_resumed_run_tries_again(tmp_path):
    script = SelfInstructScript(per_prompt=1)
    prompts = 0

    def keeps_every_ninth(request: ChatRequest) -> str:
        # Batches of one prompt, of which every ninth gets a task and the others nothing: eight
        # empty batches in a row, again and again, never ten.
        nonlocal prompts
        if request.tag == "self_instruct_tasks":
            prompts += 1
            if prompts % 9:
                return ""
        return script(request)

    summary = run(tmp_path / "ds", model=ScriptedEngine(keeps_every_ninth), num_records=2, prompts_per_batch=1)
    assert summary["reached_target"] and summary["batches"] == 18
    stalled = run(tmp_path / "stall", model=ScriptedEngine(lambda r: ""), num_records=5)
    resumed = run(tmp_path / "stall", model=ScriptedEngine(lambda r: ""), num_records=5)
    assert stalled["batches"] == STALL_BATCHES and resumed["batches"] == 2 * STALL_BATCHES


def test_rerunning_with_a_larger_budget_resumes_and_matches_an_uninterrupted_run(tmp_path):
    run(tmp_path / "whole", num_records=1000, max_batches=4)
    run(tmp_path / "parts", num_records=1000, max_batches=2)
    # A fresh script object: the resumed run must not depend on the replies' counter state,
    # only on what the dataset holds. Replies are numbered from where the first run stopped.
    script = SelfInstructScript()
    script.counter = 2 * 2 * 3
    run(tmp_path / "parts", model=ScriptedEngine(script), num_records=1000, max_batches=4)
    assert contents(tmp_path / "parts") == contents(tmp_path / "whole")
    manifest = read_manifest(tmp_path / "parts")
    assert len(manifest.runs) == 1 and next(iter(manifest.runs.values())).batches_done == 4


def test_resumed_run_rebuilds_the_task_pool_from_the_shards(tmp_path):
    first = ScriptedEngine(SelfInstructScript())
    run(tmp_path / "ds", model=first, num_records=1000, max_batches=1)
    accepted = scan(tmp_path / "ds").select("instruction").collect()["instruction"].to_list()
    script = SelfInstructScript()
    script.counter = 100
    second = ScriptedEngine(script)
    run(tmp_path / "ds", model=second, num_records=1000, max_batches=2, num_machine_demos=2)
    listed = "\n".join(r.prefill for r in second.calls[0])
    assert any(task in listed for task in accepted)


def test_a_batch_that_fails_commits_nothing_and_the_rerun_finishes_the_job(tmp_path):
    class Flaky(ScriptedEngine):
        def __init__(self, fail_on_call: int) -> None:
            super().__init__(SelfInstructScript())
            self.fail_on_call = fail_on_call

        def chat(self, requests):
            if len(self.calls) == self.fail_on_call:
                raise EngineError("server went away")
            return super().chat(requests)

    run(tmp_path / "whole", num_records=1000, max_batches=3)
    # Call 4 is batch 1's classification step: batch 0 is committed, batch 1 is half done.
    with pytest.raises(EngineError):
        run(tmp_path / "crashed", model=Flaky(fail_on_call=4), num_records=1000, max_batches=3)
    manifest = read_manifest(tmp_path / "crashed")
    assert next(iter(manifest.runs.values())).batches_done == 1
    script = SelfInstructScript()
    script.counter = 2 * 3
    run(tmp_path / "crashed", model=ScriptedEngine(script), num_records=1000, max_batches=3)
    assert contents(tmp_path / "crashed") == contents(tmp_path / "whole")


def test_a_failed_batch_is_retried_from_a_clean_state(tmp_path):
    class FailsOnce(ScriptedEngine):
        failed = False

        def chat(self, requests):
            if len(self.calls) == 2 and not self.failed:
                self.failed = True
                raise EngineError("timeout")
            return super().chat(requests)

    engine = FailsOnce(SelfInstructScript())
    summary = run(tmp_path / "ds", model=engine, retries=1, num_records=1000, max_batches=2)
    assert engine.failed and summary["batches"] == 2
    kept = scan(tmp_path / "ds").collect()
    assert kept["id"].n_unique() == kept.height


def test_a_second_run_adds_beside_the_first_without_touching_its_shards(tmp_path):
    run(tmp_path / "ds", num_records=6, seed=0)
    before = {s.path: s.sha256 for s in read_manifest(tmp_path / "ds").shards}
    run(tmp_path / "ds", num_records=6, seed=1)
    manifest = read_manifest(tmp_path / "ds")
    assert len(manifest.runs) == 2
    after = {s.path: s.sha256 for s in manifest.shards}
    assert all(after[p] == h for p, h in before.items())
    assert verify(tmp_path / "ds") == []


def test_the_prefect_flow_runs_the_same_pipeline(tmp_path, monkeypatch):
    import synth.flows.local as module

    monkeypatch.setattr(module, "get_engine", lambda config: ScriptedEngine(SelfInstructScript()))
    summary = self_instruct_flow(
        config=SelfInstructConfig(num_records=4, prompts_per_batch=2, include_seed_tasks=False),
        dataset=DatasetConfig(path=str(tmp_path / "ds")),
        engine=ENGINE,
    )
    assert summary["kept"] >= 4
    assert scan(tmp_path / "ds").collect().height == summary["kept"]
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        progress = [
            a for a in client.read_artifacts() if a.type == "progress" and str(tmp_path / "ds") in (a.description or "")
        ]
    assert progress and progress[0].data == 100.0


def test_a_mixture_run_stops_when_every_ability_has_its_records(tmp_path):
    import json

    from synth.schemas.curation import CurationConfig
    from synth.shards.summary import summarize

    script = SelfInstructScript()

    def respond(request: ChatRequest) -> str:
        if request.tag == "ability":  # labelling tasks are information extraction, the rest open QA
            label = "information_extraction" if "Please label" in request.messages[-1].content else "open_qa"
            return json.dumps({"ability": label})
        return script(request)

    mixture = {"open_qa": 5, "information_extraction": 2}
    summary = run_self_instruct(
        SelfInstructConfig(num_records=1000, prompts_per_batch=2, max_batches=20),
        ENGINE,
        DatasetConfig(path=str(tmp_path / "ds")),
        curation=CurationConfig(mixture=mixture),
        model=ScriptedEngine(respond),
        batch_retries=0,
    )
    kept = scan(tmp_path / "ds").collect()
    assert dict(kept.group_by("ability").len().iter_rows()) == mixture
    assert summary["reached_target"] and summary["kept"] == 7
    rejects = scan(tmp_path / "ds", "rejects").filter(pl.col("stage") == "mixture").collect()
    assert set(rejects["reason"]) <= {"open_qa: target of 5 met", "information_extraction: target of 2 met"}
    shown = {r["ability"]: (r["count"], r["target"]) for r in summarize(tmp_path / "ds")["abilities"]}
    assert shown == {"open_qa": (5, 5), "information_extraction": (2, 2)}


def test_a_run_counts_the_tokens_of_every_step_in_its_record(tmp_path):
    from synth.engines import Completion

    script = SelfInstructScript()

    def respond(request: ChatRequest) -> Completion:
        text = script(request)
        return Completion(text=text, prompt_tokens=10, completion_tokens=len(text.split()))

    engine = ScriptedEngine(respond)
    summary = run(tmp_path / "ds", model=engine, num_records=6)
    requests = [r for call in engine.calls for r in call]
    tokens = summary["tokens"]
    assert set(tokens) == {r.tag for r in requests}
    assert sum(t["prompt"] for t in tokens.values()) == 10 * len(requests)
    assert tokens == read_manifest(tmp_path / "ds").runs[summary["run_id"]].state["tokens"]
    again = run(tmp_path / "ds", num_records=6)  # nothing left to do: the counts stay
    assert again["tokens"] == tokens


def test_the_pace_says_the_share_done_the_time_left_and_tokens_per_second():
    from synth.flows import common

    # The clock is the pace's own: patching time.monotonic would stop Prefect's event loop thread.
    clock = iter([100.0, 160.0])
    pace = common.Pace(0.2, {"t": {"prompt": 5, "completion": 100}}, clock=lambda: next(clock))
    # 20% more in 60 s: the remaining 60% take about 180 s; 1,200 tokens written in 60 s.
    assert (
        pace.line(0.4, {"t": {"prompt": 50, "completion": 1300}}) == "40% done, about 3 min left, 20 tokens/s written"
    )


def test_cli_options_left_out_take_the_profile_default_and_given_ones_win(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import synth.flows.self_instruct as module
    from synth.cli import app

    seen = []
    monkeypatch.setattr(module, "run_job", lambda job, *a, **k: seen.append(job.config) or {})
    engine = tmp_path / "engine.yaml"
    engine.write_text("kind: scripted\n")
    args = ["generate", "self-instruct", "--out", str(tmp_path / "o"), "--engine-config", str(engine)]
    for flags, instances, seeds in (
        ([], 5, None),  # the paper's
        (["--profile", "small-model"], 1, None),  # the profile's
        (["--profile", "small-model", "--instances-per-task", "3"], 3, None),  # given: wins
        (["--seeds", str(tmp_path / "seeds.jsonl")], 5, str(tmp_path / "seeds.jsonl")),
    ):
        (tmp_path / "seeds.jsonl").write_text('{"instruction": "Name a colour."}\n')
        CliRunner().invoke(app, [*args, *flags])  # the fake run's empty summary ends the command
        config = seen.pop()
        assert (config.instances_per_task, config.seeds) == (instances, seeds)
