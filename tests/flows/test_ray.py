"""A recipe on a local Ray cluster: batches on Ray workers, one shared Redis index, in-order
commits, resume from staged batches; and the GPU concurrency limit that keeps runs of different
recipes from loading two models at once."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import polars as pl
import pytest

from synth import registry
from synth.engines import ScriptedEngine, get_engine
from synth.filters.redis_index import RedisMinHashIndex
from synth.flows.jobs import Spec
from synth.flows.scaleout import make_staged, read_staged, staged_path
from synth.flows.self_instruct import SelfInstructJob, SelfInstructSpec
from synth.generators.seeds import load_seed_tasks
from synth.schemas import ConfigFileError, ScriptedEngineConfig, SelfInstructConfig
from synth.schemas.curation import CurationConfig, MinHashConfig
from synth.schemas.recipe import Recipe, load_recipe
from synth.shards import DatasetWriter, read_manifest, scan, verify
from tests.conftest import free_port
from tests.flows import toy_generator
from tests.flows.code_script import seed_folder
from tests.flows.test_backtranslation_flow import corpus
from tests.flows.test_recipe import write

ROOT = Path(__file__).parents[2]
RESPONDER = "tests.flows.ray_scripts:pipeline"


def ray_recipe(tmp_path, redis_url, workers: int = 2, toy: bool = False) -> dict:
    docs, code = tmp_path / "docs", tmp_path / "code"
    if not docs.exists():
        corpus(docs)
        seed_folder(code)
    return {
        "name": "on-ray",
        "dataset": {"path": str(tmp_path / "ds")},
        "engine": {"kind": "scripted", "responder": RESPONDER},
        "curation": {"minhash": {"backend": "redis", "redis_url": redis_url}},
        "runner": {
            "kind": "ray",
            "workers": workers,
            "num_cpus": 1,
            # Workers import the test's scripts from the repository, as a cluster's nodes would
            # import the installed package.
            "init_kwargs": {
                "num_cpus": 2,
                "include_dashboard": False,
                "runtime_env": {"env_vars": {"PYTHONPATH": str(ROOT)}},
            },
        },
        "steps": [
            {"generator": "self_instruct", "num_records": 12, "prompts_per_batch": 2},
            # The first 8 records of the dataset: the Self-Instruct step's, on every run.
            {"generator": "evol_instruct", "source": str(tmp_path / "ds"), "rounds": 1, "chunk_size": 3, "limit": 8},
            {"generator": "backtranslation", "docs": str(docs), "rounds": 2, "chunk_size": 2, "min_chars": 60},
        ]
        # A generator the test registers (`tests.flows.toy_generator`), with independent batches.
        + ([{"generator": "toy", "num_records": 9, "batch_size": 2}] if toy else [])
        # Code generation: each worker runs its batch's programs in a sandbox of its own.
        # Wide sandbox limits: a program start stalled by a loaded machine must not make the Ray
        # run's records differ from the local run's.
        + (
            [
                {
                    "generator": "code",
                    "code": str(code),
                    "num_records": 4,
                    "batch_size": 2,
                    "samples": 3,
                    "sandbox": {"timeout_s": 60.0, "cpu_s": 60},
                }
            ]
            if toy
            else []
        ),
    }


def test_a_ray_runner_needs_the_shared_redis_index(tmp_path):
    data = ray_recipe(tmp_path, f"redis://127.0.0.1:{free_port()}/0")  # a config check: no server
    data["curation"] = {"minhash": {"backend": "local"}}
    with pytest.raises(ConfigFileError, match=r"curation\.minhash\.backend: a Ray runner needs 'redis'"):
        load_recipe(write(tmp_path, data))


def staged_on_a_worker(job, spec: Spec, engine, redis_url: str, dataset: Path) -> tuple[list, list, dict]:
    """Batch `spec` of `job` made, curated and staged as a Ray worker does it: from the job as Ray
    ships it (pickled), against the shared Redis index. Returns the staged kept records, rejects and
    meta."""
    import cloudpickle

    shipped = cloudpickle.loads(cloudpickle.dumps(job))
    with DatasetWriter(dataset):  # the flow opens the dataset (and so gives it its id) first
        pass
    curation = CurationConfig(minhash=MinHashConfig(backend="redis", redis_url=redis_url))
    return read_staged(make_staged(shipped, spec, engine, curation, str(dataset)))


def test_a_staged_batch_is_reused_not_regenerated(tmp_path, redis_url):
    """A batch staged before a crash is committed from its folder: the worker does not run it again."""
    curation = CurationConfig(minhash=MinHashConfig(backend="redis", redis_url=redis_url))
    config = SelfInstructConfig(num_records=4, prompts_per_batch=2)
    job = SelfInstructJob(config, load_seed_tasks(), "r1")
    spec = Spec(0, SelfInstructSpec(2, ()))
    engine = ScriptedEngineConfig(responder=RESPONDER)
    with DatasetWriter(tmp_path / "ds"):  # the flow opens the dataset (and so gives it its id) first
        pass
    path = make_staged(job, spec, engine, curation, str(tmp_path / "ds"))
    kept, _, meta = read_staged(path)
    assert kept and path == str(staged_path(tmp_path / "ds", "r1", 0)) and meta["delta"]["prompts"] == 2
    assert meta["tokens"]["self_instruct_tasks"]["completion"] > 0
    stamp = os.stat(Path(path) / "kept.jsonl").st_mtime_ns
    assert make_staged(job, spec, engine, curation, str(tmp_path / "ds")) == path
    assert os.stat(Path(path) / "kept.jsonl").st_mtime_ns == stamp


def records_by_generator(path) -> dict[str, list[tuple]]:
    kept = scan(path).collect().sort("id")
    return {
        g: kept.filter(pl.col("generator") == g).select("id", "instruction", "output", "batch").rows()
        for g in ("self_instruct", "evol_instruct", "backtranslation", "toy", "code")
    }


def tokens_by_run(path) -> list[tuple]:
    runs = read_manifest(path).runs.values()
    return sorted((r.generator, r.batches_done, json.dumps(r.state.get("tokens", {}), sort_keys=True)) for r in runs)


@pytest.mark.e2e
@pytest.mark.xdist_group("ray")  # one local Ray cluster at a time on the machine
@pytest.mark.usefixtures("prefect_harness")
def test_a_recipe_runs_on_a_local_ray_cluster_as_it_runs_locally_and_resumes(tmp_path, redis_url, monkeypatch):
    from synth.flows.recipe import recipe_flow

    monkeypatch.setitem(registry.GENERATORS, "toy", toy_generator.ENTRY)
    recipe = load_recipe(write(tmp_path, ray_recipe(tmp_path, redis_url, toy=True)))
    summaries = recipe_flow(recipe=recipe)
    si, evol, bt, toy, code = summaries
    assert si["kept"] >= 12 and evol["kept"] > 0 and evol["source_instructions"] == 8 and bt["kept"] > 0
    assert toy["kept"] == 6 and toy["asked"] == 9  # seeds 2, 5 and 8 are answered off-form
    # The toy's own block and reject stage, made on workers that were never told of the toy.
    toys = scan(tmp_path / "ds").filter(pl.col("generator") == "toy").collect()
    assert sorted(b["number"] for b in toys["toy"]) == [0, 1, 3, 4, 6, 7]
    toy_rejects = scan(tmp_path / "ds", "rejects").filter(pl.col("generator") == "toy").collect()
    assert toy_rejects["stage"].to_list() == ["off-form"] * 3
    assert code["kept"] >= 4 and code["funnel"]["kept"] == code["kept"] and code["funnel"]["execution:assertion"] > 0

    path = tmp_path / "ds"
    assert verify(path) == []
    manifest = read_manifest(path)
    kept = scan(path).collect()
    assert kept["id"].n_unique() == kept.height == sum(run.kept for run in manifest.runs.values())
    # Every batch ran on a Ray worker process, none on the test's own, and its tokens were counted.
    runs = [run for run in manifest.runs.values() if run.batches_done]
    workers = {w for run in runs for w in run.state["workers"]}
    assert workers and all(not w.endswith(f":{os.getpid()}") for w in workers)
    assert all(sum(run.state["workers"].values()) == run.batches_done for run in runs)
    written = {run.generator for run in runs if sum(t["completion"] for t in run.state["tokens"].values()) > 0}
    assert written == {"self_instruct", "evol_instruct", "backtranslation", "toy", "code"}
    assert bt["funnel"]["rounds"].keys() == {"1", "2"}
    # Nothing left staged, and the shared index holds exactly the dataset's kept records.
    assert not any((path / "staging").rglob("*.jsonl"))
    index = RedisMinHashIndex.open(path, recipe.curation.minhash)
    assert len(index) == kept.height and all(index.contains(kept["id"].to_list()))

    # The same recipe on the local runner, into another dataset: the same records, batch by batch.
    local = ray_recipe(tmp_path, redis_url, toy=True)
    local["runner"] = {"kind": "local"}
    local["dataset"]["path"] = str(tmp_path / "local")
    local["steps"][1]["source"] = str(tmp_path / "local")
    local_summaries = recipe_flow(recipe=load_recipe(write(tmp_path, local)))
    assert [s["kept"] for s in local_summaries] == [s["kept"] for s in summaries]
    assert records_by_generator(tmp_path / "local") == records_by_generator(path)
    assert tokens_by_run(tmp_path / "local") == tokens_by_run(path)

    # The same recipe again: every run is complete, nothing is generated or written twice.
    again = recipe_flow(recipe=recipe)
    assert [s["kept"] for s in again] == [si["kept"], evol["kept"], bt["kept"], toy["kept"], code["kept"]]
    assert scan(path).collect().height == kept.height
    assert scan(path).filter(pl.col("generator") == "evol_instruct").collect().height == evol["kept"]


@pytest.mark.usefixtures("prefect_harness")
def test_runs_holding_the_gpu_limit_never_overlap(tmp_path, monkeypatch):
    """Two recipes on one GPU limit: the second waits until the first has released its engine."""
    import synth.flows.recipe as recipe_module
    from synth.flows.recipe import ensure_concurrency_limit, gpu_slot

    assert ensure_concurrency_limit("test-gpu") is True
    assert ensure_concurrency_limit("test-gpu") is False  # an existing limit is left alone
    spans: list[tuple[str, float, float]] = []
    closed: list[float] = []
    monkeypatch.setattr(ScriptedEngine, "close", lambda self: closed.append(time.monotonic()))
    monkeypatch.setattr(recipe_module, "get_run_logger", lambda: __import__("logging").getLogger("t"))

    def run(name: str) -> None:
        recipe = Recipe.model_validate(
            {
                "name": name,
                "dataset": {"path": str(tmp_path / name)},
                "engine": {"kind": "scripted"},
                "gpu_limit": "test-gpu",
                "steps": [{"generator": "self_instruct", "num_records": 1}],
            }
        )
        with gpu_slot(recipe):
            get_engine(ScriptedEngineConfig(model=f"gpu-slot-{name}"))  # built inside: closed on leaving
            start = time.monotonic()
            time.sleep(1.5)
            spans.append((name, start, time.monotonic()))

    threads = [threading.Thread(target=run, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    (_, _, end_first), (_, start_second, _) = sorted(spans, key=lambda s: s[1])
    assert end_first <= start_second  # the second held the slot only after the first let go
    assert len(closed) == 2 and closed[0] <= start_second  # and the first's engines were released before that
