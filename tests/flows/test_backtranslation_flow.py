"""The backtranslation flow on a scripted engine: the funnel, rounds, resume; and the CLI."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from synth.cli import app
from synth.engines import ChatRequest, ScriptedEngine
from synth.flows.backtranslation import backtranslation_run_id, run_backtranslation
from synth.generators.seed_pairs import load_seed_pairs
from synth.schemas import BacktranslationConfig, ConfigFileError, DatasetConfig, ScriptedEngineConfig
from synth.schemas.recipe import load_recipe
from synth.shards import read_manifest, scan, verify
from tests.generators.test_backtranslation import Script

pytestmark = pytest.mark.usefixtures("prefect_harness")
TOPICS = ["rain", "snow", "tides", "wind", "frost", "fog"]


def corpus(folder):
    folder.mkdir()
    for topic in TOPICS:
        body = f"How {topic} forms is explained here in plain words: air, water and temperature work together to make {topic} over hours and days."
        (folder / f"{topic}.md").write_text(f"# {topic.title()}\n\n{body}\n\n# Menu\n\nHome | About | Blog | Shop\n")
    (folder / "zz_copy.md").write_text((folder / "rain.md").read_text())  # an exact duplicate segment
    (folder / "blob.txt").write_bytes(b"\x00\x00binary")
    return folder


def run(docs, out, responder, **config):
    return run_backtranslation(
        BacktranslationConfig(docs=str(docs), min_chars=60, chunk_size=2, **config),
        ScriptedEngineConfig(),
        DatasetConfig(path=str(out)),
        model=ScriptedEngine(responder),
        batch_retries=0,
    )


def scores_by_topic(good: set[str]):
    def grade(request: ChatRequest) -> str:
        answer = request.messages[0].content.split("Answer:", 1)[1]
        return (
            '{"rationale": "r", "score": 5}'
            if any(f"make {t} " in answer for t in good)
            else '{"rationale": "r", "score": 3}'
        )

    return grade


def test_run_stores_the_funnel_and_keeps_only_high_scores(tmp_path):
    summary = run(corpus(tmp_path / "docs"), tmp_path / "ds", Script(scores_by_topic({"rain", "snow"})))
    funnel = read_manifest(tmp_path / "ds").runs[summary["run_id"]].state["funnel"]
    assert funnel["documents"] == 7 and funnel["documents_skipped"] == {"binary file": 1}
    assert funnel["segments"] == 6 and funnel["segments_dropped"]["exact duplicate"] == 1
    assert funnel["rounds"]["1"] == {"graded": 6, "kept": 2, "unparseable": 0, "scores": {"5": 2, "3": 4}}
    kept = scan(tmp_path / "ds").collect()
    assert sorted(kept["source_doc"]) == ["rain.md", "snow.md"]
    rejects = scan(tmp_path / "ds", "rejects").collect()
    assert set(rejects["stage"]) == {"document", "segment", "self-curation"}
    assert verify(tmp_path / "ds") == []


def test_later_rounds_retry_only_uncurated_segments_with_a_grown_few_shot_pool(tmp_path):
    calls: list[ChatRequest] = []
    grade = scores_by_topic({"rain"})

    def responder(request: ChatRequest) -> str:
        calls.append(request)
        if request.tag == "backtranslation_grade" and len([c for c in calls if c.tag == "backtranslation_grade"]) > 6:
            return '{"rationale": "better now", "score": 5}'  # round 2 grades everything 5
        return Script(grade)(request)

    summary = run(corpus(tmp_path / "docs"), tmp_path / "ds", responder, rounds=2, num_demos=40)
    rounds = read_manifest(tmp_path / "ds").runs[summary["run_id"]].state["funnel"]["rounds"]
    assert rounds["1"]["kept"] == 1 and rounds["2"]["graded"] == 5 and rounds["2"]["kept"] == 5
    round2_backward = [c for c in calls if c.tag == "backtranslation_backward"][6:]
    assert round2_backward and all("Explain this: How" in c.messages[0].content for c in round2_backward)
    kept = scan(tmp_path / "ds").collect()
    assert kept.height == 6 and kept["source_doc"].n_unique() == 6


def test_rerun_resumes_without_sending_committed_chunks_again(tmp_path):
    docs = corpus(tmp_path / "docs")
    first = run(docs, tmp_path / "ds", Script())
    engine = ScriptedEngine(Script())
    again = run_backtranslation(
        BacktranslationConfig(docs=str(docs), min_chars=60, chunk_size=2),
        ScriptedEngineConfig(),
        DatasetConfig(path=str(tmp_path / "ds")),
        model=engine,
    )
    assert engine.calls == [] and again["kept"] == first["kept"] == 6


def test_cli_rejects_an_unreadable_source(tmp_path):
    result = CliRunner().invoke(
        app, ["generate", "backtranslate", "--docs", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2 and "no such file" in result.output


# -- seed pairs (--seeds) ---------------------------------------------------------------------------

ANSWER = " It takes a few sentences of plain words, so it is long enough to show as a demo."
GOOD = [
    {
        "instruction": "Describe how a kettle boils water (GOOD-1).",
        "output": "A heating coil warms the water." + ANSWER,
    },
    {
        "instruction": "Explain what a compass does (GOOD-2).",
        "input": "",
        "output": "It points to magnetic north." + ANSWER,
    },
]
BAD = [
    {"instruction": "Summarize it (BAD-INPUT).", "input": "Some text to summarize.", "output": "A summary." + ANSWER},
    {"instruction": "Rewrite the following paragraph (BAD-UNSEEN).", "output": "A rewritten paragraph." + ANSWER},
    {"instruction": "Fix the bugs in this code (BAD-CODE).", "output": "def f(): return 1  # fixed" + ANSWER},
]


def seed_file(path, items, array=False):
    path.write_text(json.dumps(items, indent=2) if array else "".join(json.dumps(i) + "\n" for i in items))
    return path


@pytest.mark.parametrize("array", [False, True], ids=["jsonl", "json-array"])
def test_seed_file_pairs_are_the_demos_and_unusable_pairs_never_are(tmp_path, array):
    seeds = seed_file(tmp_path / ("seeds.json" if array else "seeds.jsonl"), GOOD + BAD, array)
    prompts: list[str] = []

    def responder(request: ChatRequest) -> str:
        if request.tag == "backtranslation_backward":
            prompts.append(request.messages[0].content)
        return Script()(request)

    summary = run(corpus(tmp_path / "docs"), tmp_path / "ds", responder, seeds=str(seeds), num_demos=10)
    assert len(prompts) == 6
    for prompt in prompts:
        assert "(GOOD-1)" in prompt and "(GOOD-2)" in prompt
        assert "BAD-" not in prompt and "Some text to summarize" not in prompt
        assert "Suggest five names for a small neighborhood bakery" not in prompt  # no built-in pair
    expected = {
        "file": str(seeds),
        "used": 2,
        "skipped": {"has an input": 1, "instruction refers to text not shown": 2},
    }
    assert summary["funnel"]["seeds"] == expected
    assert read_manifest(tmp_path / "ds").runs[summary["run_id"]].state["funnel"]["seeds"] == expected


def test_run_id_follows_the_seed_pairs_content_not_the_file_path(tmp_path):
    def rid(path):
        config = BacktranslationConfig(docs=str(tmp_path / "docs"), seeds=str(path))
        return backtranslation_run_id(config, ScriptedEngineConfig(), None, load_seed_pairs(path))

    one = seed_file(tmp_path / "one.jsonl", GOOD)
    (tmp_path / "elsewhere").mkdir()
    same = seed_file(tmp_path / "elsewhere" / "two.json", GOOD, array=True)
    changed = seed_file(tmp_path / "three.jsonl", GOOD[:1])
    assert rid(one) == rid(same)
    assert rid(one) != rid(changed)
    default = BacktranslationConfig(docs=str(tmp_path / "docs"))
    assert rid(one) != backtranslation_run_id(default, ScriptedEngineConfig(), None, load_seed_pairs())


def flow_must_not_start(**_: object) -> None:
    raise AssertionError("the flow started (and with it the engine) before the seed file was checked")


def scripted_engine(tmp_path):
    engine = tmp_path / "engine.json"
    engine.write_text(json.dumps({"kind": "scripted"}))
    return engine


@pytest.mark.parametrize(
    ("content", "where"),
    [
        (json.dumps(GOOD[0]) + "\n" + '{"instruction": "x", "output": \n', "seeds.jsonl:2: invalid JSON"),
        (
            json.dumps([GOOD[0], {"instruction": "no output"}], indent=2),
            "seeds.jsonl:6: item 2: missing field 'output'",
        ),
        ("".join(json.dumps(i) + "\n" for i in BAD), "seeds.jsonl: no usable seed pairs: all 3 skipped"),
    ],
)
def test_cli_rejects_a_bad_seed_file_in_one_line_before_any_model_loads(tmp_path, monkeypatch, content, where):
    monkeypatch.setattr("synth.flows.self_training.backtranslation_flow", flow_must_not_start)
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(content)
    docs = corpus(tmp_path / "docs")
    args = ["generate", "backtranslate", "--docs", str(docs), "--seeds", str(seeds), "--out", str(tmp_path / "o")]
    result = CliRunner().invoke(app, [*args, "--engine-config", str(scripted_engine(tmp_path))])
    message = result.output.strip()
    assert result.exit_code == 2 and message.startswith(f"error: {tmp_path}") and where in message
    assert "\n" not in message and "Traceback" not in message
    assert not (tmp_path / "o").exists()


def test_recipe_backtranslation_step_takes_seeds_and_checks_them_first(tmp_path, monkeypatch):
    monkeypatch.setattr("synth.flows.recipe.recipe_flow", flow_must_not_start)
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text('{"instruction": "a"}\n')
    recipe = tmp_path / "recipe.json"
    step = {"generator": "backtranslation", "docs": str(corpus(tmp_path / "docs")), "seeds": str(seeds)}
    recipe.write_text(
        json.dumps(
            {"name": "bt", "dataset": {"path": str(tmp_path / "ds")}, "engine": {"kind": "scripted"}, "steps": [step]}
        )
    )
    assert load_recipe(recipe).steps[0].seeds == str(seeds)
    result = CliRunner().invoke(app, ["run", str(recipe)])
    assert result.exit_code == 2 and result.output.strip() == f"error: {seeds}:1: missing field 'output'"
    assert not (tmp_path / "ds").exists()
    step["seeds"] = str(tmp_path / "missing.jsonl")
    recipe.write_text(json.dumps({"name": "bt", "dataset": {"path": str(tmp_path / "ds")}, "steps": [step]}))
    with pytest.raises(ConfigFileError, match=r"steps\.0\.seeds: .*missing\.jsonl does not exist"):
        load_recipe(recipe)


def test_cli_run_with_seeds_reports_the_pairs_used_and_skipped(tmp_path):
    seeds = seed_file(tmp_path / "seeds.json", GOOD + BAD[:1], array=True)
    args = ["generate", "backtranslate", "--docs", str(corpus(tmp_path / "docs")), "--seeds", str(seeds)]
    result = CliRunner().invoke(
        app,
        [*args, "--out", str(tmp_path / "o"), "--engine-config", str(scripted_engine(tmp_path))],
        terminal_width=400,
    )
    assert result.exit_code == 0, result.output
    flat = "".join(result.output.split())  # the console wraps long lines at its own width
    assert "".join(f"seed pairs 2 from {seeds} (skipped 1 has an input)".split()) in flat
