"""A batch that fails after curation ran (a judge outage, a failed write, a manifest that could
not be written after the batch's shards landed) commits each of its records once when retried, in
every generator; faults a retry cannot fix stop the run at once; a shared Redis
index is named by the dataset, not its folder, and a Redis that dies mid-run loses nothing."""

from __future__ import annotations

import errno
import json

import pytest

from synth.engines import ChatRequest, EngineError, ScriptedEngine
from synth.engines.base import ChatTemplate
from synth.filters.base import FilterChain
from synth.filters.dedup import MinHashIndex, NearDedupFilter
from synth.filters.exact_dedup import ExactDedupFilter
from synth.filters.redis_log import RedisUnavailableError
from synth.flows import local as curation_flow  # where a batch is curated and committed
from synth.flows.backtranslation import run_backtranslation
from synth.flows.common import commit_curated
from synth.flows.curate import curate_file
from synth.flows.evol_instruct import run_evol_instruct
from synth.flows.magpie import run_magpie
from synth.flows.preferences import run_preferences
from synth.flows.self_instruct import run_self_instruct
from synth.schemas import (
    BacktranslationConfig,
    DatasetConfig,
    EvolInstructConfig,
    Outcome,
    Record,
    RunInfo,
    ScriptedEngineConfig,
    SelfInstructConfig,
)
from synth.schemas.curation import CurationConfig, MinHashConfig
from synth.schemas.magpie import MagpieConfig
from synth.schemas.preferences import PreferencesConfig
from synth.shards import DatasetWriter, read_manifest, scan, store, verify
from synth.shards.layout import MANIFEST, STAGED
from tests.conftest import SelfInstructScript, free_port, start_redis
from tests.flows.test_backtranslation_flow import corpus
from tests.flows.test_magpie_flow import Counting
from tests.flows.test_preferences_flow import Graded, write_source
from tests.generators.test_backtranslation import Script as BacktranslationScript
from tests.generators.test_evol_instruct import EvolScript
from tests.generators.test_magpie import ChatML

pytestmark = pytest.mark.usefixtures("prefect_harness")


class Replay:
    """Answers a prompt it has seen with the same reply, as a seeded model does: a retried batch
    regenerates exactly the records of its failed attempt."""

    def __init__(self, script) -> None:
        self.script = script
        self.seen: dict[tuple, object] = {}

    def __call__(self, request: ChatRequest):
        # The seed too: Magpie asks the same prompt for every conversation, each with its own seed.
        seed = request.sampling.seed if request.sampling is not None else None
        key = (request.tag, request.prefill, tuple(m.content for m in request.messages), seed)
        if key not in self.seen:
            self.seen[key] = self.script(request)
        return self.seen[key]


def fail_first_commit(monkeypatch, error: OSError) -> dict:
    real = DatasetWriter.commit_batch
    calls = {"n": 0}

    def flaky(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise error
        return real(self, *args, **kwargs)

    monkeypatch.setattr(DatasetWriter, "commit_batch", flaky)
    return calls


def outcome(path) -> tuple:
    kept = sorted(scan(path).collect()["instruction"].to_list())
    rejects = sorted(map(tuple, scan(path, "rejects").collect().select("stage", "reason").rows()))
    return kept, rejects


def self_instruct(out, retries: int = 1):
    return run_self_instruct(
        SelfInstructConfig(num_records=12, prompts_per_batch=3),
        ScriptedEngineConfig(),
        DatasetConfig(path=str(out)),
        model=ScriptedEngine(Replay(SelfInstructScript())),
        batch_retries=retries,
    )


def evol(tmp_path, out):
    source = tmp_path / "src.jsonl"
    source.write_text("\n".join(json.dumps({"instruction": f"Explain topic {i} to a child."}) for i in range(4)))
    return run_evol_instruct(
        EvolInstructConfig(source=str(source), rounds=1, chunk_size=2),
        ScriptedEngineConfig(),
        DatasetConfig(path=str(out)),
        model=ScriptedEngine(Replay(EvolScript())),
        batch_retries=1,
        retry_delays=[0],
    )


def backtranslate(tmp_path, out):
    docs = tmp_path / "docs"
    if not docs.exists():
        corpus(docs)
    return run_backtranslation(
        BacktranslationConfig(docs=str(docs), min_chars=60, chunk_size=2),
        ScriptedEngineConfig(),
        DatasetConfig(path=str(out)),
        model=ScriptedEngine(Replay(BacktranslationScript())),
        batch_retries=1,
        retry_delays=[0],
    )


def magpie(out):
    return run_magpie(
        MagpieConfig(num_records=6, batch_size=4, seed=2),
        ScriptedEngineConfig(),
        DatasetConfig(path=str(out)),
        model=ScriptedEngine(Replay(Counting()), template=ChatTemplate(ChatML())),
        batch_retries=1,
        retry_delays=[0],
    )


def preferences(tmp_path, out):
    return run_preferences(
        PreferencesConfig(source=write_source(tmp_path), chunk_size=3, judge_samples=1),
        ScriptedEngineConfig(),
        DatasetConfig(path=str(out)),
        model=ScriptedEngine(Replay(Graded())),
        batch_retries=1,
        retry_delays=[0],
    )


def runner(generator: str, tmp_path):
    return {
        "self-instruct": lambda out: self_instruct(out),
        "evol": lambda out: evol(tmp_path, out),
        "backtranslation": lambda out: backtranslate(tmp_path, out),
        "magpie": magpie,
        "preferences": lambda out: preferences(tmp_path, out),
    }[generator]


GENERATOR_RUNS = ["self-instruct", "evol", "backtranslation", "magpie", "preferences"]


@pytest.mark.parametrize("generator", GENERATOR_RUNS)
def test_batch_retried_after_a_failed_commit_commits_all_its_records(tmp_path, monkeypatch, generator):
    run = runner(generator, tmp_path)
    clean = run(tmp_path / "clean")
    calls = fail_first_commit(monkeypatch, OSError(errno.EIO, "I/O error", "shard"))
    retried = run(tmp_path / "retried")
    assert calls["n"] > 1
    assert retried["kept"] == clean["kept"] > 0
    assert outcome(tmp_path / "retried") == outcome(tmp_path / "clean")


def fail_between_shards_and_manifest(monkeypatch) -> dict:
    """The first batch's commit fails after its staged shards landed, before the manifest that
    names them is written (the write of the manifest itself fails)."""
    real = store.atomic_write_bytes
    seen: dict = {"faults": 0, "staged": []}

    def flaky(path, data):
        staged = sorted(p.name for p in path.parent.glob("*/*" + STAGED))
        if path.name == MANIFEST and staged and not seen["faults"]:
            seen["faults"] += 1
            seen["staged"] = staged
            raise OSError(errno.EIO, "I/O error", str(path))
        return real(path, data)

    monkeypatch.setattr(store, "atomic_write_bytes", flaky)
    return seen


@pytest.mark.parametrize("generator", GENERATOR_RUNS)
def test_batch_retried_after_its_shards_landed_commits_each_record_once(tmp_path, monkeypatch, generator):
    run = runner(generator, tmp_path)
    clean = run(tmp_path / "clean")
    seen = fail_between_shards_and_manifest(monkeypatch)
    retried = run(tmp_path / "retried")
    assert seen["faults"] == 1 and any(name.endswith(".parquet" + STAGED) for name in seen["staged"])
    assert retried["kept"] == clean["kept"] > 0
    kept = scan(tmp_path / "retried").collect()
    assert kept.height == kept["id"].n_unique() == read_manifest(tmp_path / "retried").rows("kept")
    assert outcome(tmp_path / "retried") == outcome(tmp_path / "clean")
    assert verify(tmp_path / "retried") == []
    assert not list((tmp_path / "retried").glob("*/*" + STAGED))  # nothing staged is left behind


def test_judge_outage_after_dedup_ran_leaves_the_dedup_state_as_committed(tmp_path):
    root = tmp_path / "ds"
    with DatasetWriter(root) as writer:
        writer.start_run(RunInfo(run_id="r", generator="g", config={}, engine={}))
        index = MinHashIndex.open(root, MinHashConfig())
        outage = {"left": 1}

        class Judge:
            stage = "judge"

            def apply(self, records):
                if outage["left"]:
                    outage["left"] -= 1
                    raise EngineError("judge server unreachable")
                return Outcome(kept=list(records))

        chain = FilterChain([ExactDedupFilter(root), NearDedupFilter(index), Judge()])
        batch = [
            Record(generator="g", instruction=f"Say {i} in {' '.join(f'w{i}{k}' for k in range(6))}", output="ok")
            for i in range(5)
        ]
        with pytest.raises(EngineError):
            commit_curated(writer, "r", 0, chain, index, batch, [])
        committed = commit_curated(writer, "r", 0, chain, index, batch, [])
    assert committed.kept == 5 and committed.rejected == 0
    assert scan(root).collect().height == 5


def test_full_disk_stops_the_run_at_once_keeping_what_was_committed(tmp_path, monkeypatch):
    calls = fail_first_commit(monkeypatch, OSError(errno.ENOSPC, "No space left on device", "shard"))
    with pytest.raises(Exception) as raised:
        self_instruct(tmp_path / "ds", retries=2)
    assert calls["n"] == 1  # not retried
    assert "No space left" in str(raised.value)
    runs = list(read_manifest(tmp_path / "ds").runs.values())
    assert len(runs) == 1 and runs[0].status == "running" and runs[0].kept == 0


# -- Redis -----------------------------------------------------------------------------------------


def write_records(path, n: int, tag: str = "t", output: str = "Fine.") -> None:
    words = lambda i: " ".join(f"{tag}{i}w{k}" for k in range(16))  # noqa: E731
    path.write_text(
        "\n".join(
            json.dumps({"instruction": f"Tell me about {tag} {i}: {words(i)}", "output": output}) for i in range(n)
        )
    )


def test_two_datasets_named_alike_keep_separate_redis_indexes(tmp_path, redis_url):
    config = CurationConfig(minhash=MinHashConfig(backend="redis", redis_url=redis_url))
    write_records(tmp_path / "in.jsonl", 10)
    for parent in ("a", "b"):
        summary = curate_file(tmp_path / "in.jsonl", tmp_path / parent / "X", config)
        assert summary["kept"] == 10, summary["rejects_by_reason"]
    shared = CurationConfig(minhash=MinHashConfig(backend="redis", redis_url=redis_url, namespace="team"))
    assert curate_file(tmp_path / "in.jsonl", tmp_path / "c", shared)["kept"] == 10
    write_records(tmp_path / "near.jsonl", 10, output="Fine, thanks.")
    assert curate_file(tmp_path / "near.jsonl", tmp_path / "d", shared)["kept"] == 0  # on purpose


def test_redis_dying_mid_run_fails_the_run_and_a_resume_gives_the_uninterrupted_result(tmp_path, monkeypatch):
    port = free_port()
    server = start_redis(port, tmp_path)
    config = CurationConfig(minhash=MinHashConfig(backend="redis", redis_url=f"redis://127.0.0.1:{port}/0"))
    source = tmp_path / "in.jsonl"
    write_records(source, 12)
    lines = source.read_text().splitlines()
    source.write_text("\n".join(lines + lines[:3]))  # three exact copies at the end
    try:
        curate_file(source, tmp_path / "clean", config, batch_size=5)
        real = curation_flow.commit_curated
        calls = {"n": 0}

        def then_die(*args, **kwargs):
            committed = real(*args, **kwargs)
            calls["n"] += 1
            if calls["n"] == 1:
                server.terminate()
                server.wait(timeout=10)
            return committed

        monkeypatch.setattr(curation_flow, "commit_curated", then_die)
        with pytest.raises(RedisUnavailableError, match=str(port)):
            curate_file(source, tmp_path / "cut", config, batch_size=5)
        assert read_manifest(tmp_path / "cut").rows("kept") == 5  # the first batch stays committed
        monkeypatch.setattr(curation_flow, "commit_curated", real)
        server = start_redis(port, tmp_path)  # back, and empty
        curate_file(source, tmp_path / "cut", config, batch_size=5)
        assert outcome(tmp_path / "cut") == outcome(tmp_path / "clean")
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_novelty_pool_forgets_a_batch_that_was_not_committed():
    from synth.filters.novelty_filter import NoveltyFilter

    novelty = NoveltyFilter(["Write a poem about the sea."])
    batch = [Record(generator="g", instruction="Summarize the history of Rome in three sentences.", output="o")]
    chain = FilterChain([novelty])
    assert len(chain.apply(batch).kept) == 1
    chain.rollback()
    assert len(chain.apply(batch).kept) == 1  # not a copy of itself
    chain.commit()
    assert chain.apply(batch).kept == []
