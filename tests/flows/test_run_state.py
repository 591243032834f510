"""A run's state in the manifest is typed by its job: a resumed run checks it before its first
batch, and a state it cannot read stops the run with the manifest and the run named."""

from __future__ import annotations

import json

import pytest

from synth.cli.errors import describe
from synth.schemas.runs import RunState, StateError, check_state
from synth.shards import read_manifest, scan
from tests.flows.test_magpie_flow import magpie

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_a_damaged_state_stops_the_resumed_run_before_it_writes(tmp_path):
    first = magpie(tmp_path, 6)
    manifest = tmp_path / "ds" / "manifest.json"
    data = json.loads(manifest.read_text())
    data["runs"][first["run_id"]]["state"]["started"] = "a dozen"
    manifest.write_text(json.dumps(data))
    kept = scan(tmp_path / "ds").collect().height

    with pytest.raises(StateError) as caught:
        magpie(tmp_path, 20)  # a larger target: the run would go on from its state

    message = str(caught.value)
    assert str(manifest) in message and first["run_id"] in message and "started" in message
    assert describe(caught.value) == (message, 2)  # the CLI's one line, as input the user can fix
    after = read_manifest(tmp_path / "ds").runs[first["run_id"]]
    assert after.batches_done == first["batches"] and scan(tmp_path / "ds").collect().height == kept


def test_a_state_is_checked_key_by_key_and_keeps_what_it_does_not_know():
    check_state(RunState, {}, "fresh")  # a run that committed nothing yet
    check_state(RunState, {"tokens": {"gen": {"prompt": 3, "completion": 4}}, "from_an_older_run": 1}, "m")
    with pytest.raises(StateError, match=r"^m: run r: .*tokens\.gen\.completion"):
        check_state(RunState, {"tokens": {"gen": {"prompt": 3}}}, "m: run r")
    with pytest.raises(StateError, match=r"workers\.w1"):
        check_state(RunState, {"workers": {"w1": "two"}}, "m")


@pytest.mark.parametrize(
    ("job", "key", "good", "bad"),
    [
        (
            "synth.flows.evol_instruct:EvolInstructJob",
            "rounds",
            {"1": {"in": 4, "evolved": 3, "eliminated": {}}},
            {"1": {"in": 4, "evolved": "three", "eliminated": {}}},
        ),
        ("synth.flows.preferences:PreferencesJob", "pairs", {"instructions": 2, "paired": 1}, {"paired": [1]}),
        ("synth.flows.reflection:ReflectionJob", "recycled", {"pairs": 2}, ["pairs"]),
        ("synth.flows.codeclm:CodeclmJob", "codeclm", {"pairs": 2}, {"pairs": None}),
    ],
)
def test_a_chunked_jobs_state_is_its_counts_under_its_own_key(job, key, good, bad):
    from synth.registry import load

    shape = load(job).state_type
    check_state(shape, {key: good, "tokens": {"gen": {"prompt": 1, "completion": 2}}}, "m")
    with pytest.raises(StateError, match=rf"m: .*{key}"):
        check_state(shape, {key: bad}, "m")
    with pytest.raises(StateError, match="tokens"):  # the shared part is checked too
        check_state(shape, {key: good, "tokens": {"gen": "many"}}, "m")
