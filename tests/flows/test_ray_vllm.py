"""A recipe on a local Ray cluster through the real vLLM engine on the embedded model: the Ray
worker loads the model itself and its records reach the dataset with the model's provenance."""

from __future__ import annotations

import os

import polars as pl
import pytest

from synth.engines.embedded import EMBEDDED_MODEL_NAME
from synth.generators.seeds import DEFAULT_SEEDS
from synth.schemas.recipe import load_recipe
from synth.shards import read_manifest, scan, verify
from tests.flows.test_ray import ROOT
from tests.flows.test_recipe import write

pytestmark = [
    pytest.mark.engine,
    pytest.mark.usefixtures("prefect_harness"),
    # One local Ray cluster at a time on the machine: the Ray tests share a test worker.
    pytest.mark.xdist_group("ray"),
]


def test_evol_instruct_runs_on_a_ray_worker_with_the_embedded_model(tmp_path, redis_url):
    from synth.flows.recipe import recipe_flow

    data = {
        "name": "ray-vllm",
        "dataset": {"path": str(tmp_path / "ds")},
        "engine": {"kind": "vllm"},
        "gpu_limit": "",
        "curation": {"minhash": {"backend": "redis", "redis_url": redis_url}},
        "runner": {
            "kind": "ray",
            "workers": 1,
            "num_cpus": 1,
            "init_kwargs": {
                "num_cpus": 2,
                "include_dashboard": False,
                "runtime_env": {"env_vars": {"PYTHONPATH": str(ROOT)}},
            },
        },
        "steps": [
            {
                "generator": "evol_instruct",
                "source": str(DEFAULT_SEEDS),
                "rounds": 1,
                "limit": 4,
                "profile": "small-model",
                # Short replies: the test is about where the model runs, not what it writes.
                "evolve_sampling": {"temperature": 0.7, "top_p": 0.95, "max_tokens": 192},
                "response_sampling": {"temperature": 0.7, "top_p": 0.95, "max_tokens": 192},
            }
        ],
    }
    [summary] = recipe_flow(recipe=load_recipe(write(tmp_path, data)))
    path = tmp_path / "ds"
    assert verify(path) == []
    run = read_manifest(path).runs[summary["run_id"]]
    [worker] = run.state["workers"]
    assert not worker.endswith(f":{os.getpid()}") and run.model == EMBEDDED_MODEL_NAME
    funnel = run.state["rounds"]["1"]
    assert funnel["in"] == 4 == funnel["evolved"] + sum(funnel["eliminated"].values())
    kept = scan(path).collect()
    evolved = kept.filter(pl.col("round") >= 1)  # round 0: the seed tasks, with their own outputs
    assert kept.height == summary["kept"] and (evolved["model"] == EMBEDDED_MODEL_NAME).all()
