"""CodecLM, one chunk at a time on scripted models: encoding puts each seed's metadata on its
records; Self-Rubrics runs the configured number of rounds; the contrastive filter keeps a pair
only when the gap exceeds the threshold (the paper's |G| > 3), sends the rest back, and rejects
them with their scores after the last iteration; the strong and target models are two engines,
each answering only its own requests."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from synth.engines import ChatRequest, ScriptedEngine
from synth.generators.codeclm import (
    DECODE,
    ENCODE,
    IMPROVE,
    JUDGE,
    RUBRICS,
    STRONG,
    TARGET,
    TEMPLATES,
    CodeclmGenerator,
)
from synth.generators.codeclm_replies import parse_metadata, parse_rubrics, parse_scores
from synth.generators.seeds import load_seed_tasks
from synth.prompts import languages
from synth.schemas.codeclm import CodeclmConfig

# What each decoded instruction is about, and (by its kind) how the scripted judge scores it.
KINDS = {
    "keep-now": "Explain why the sky looks blue at noon",  # strong 9, target 5: kept at once
    "keep-after-2": "Draft a polite email declining a meeting",  # kept once two actions were applied
    "never": "List three uses for baking soda",  # a tie every time: a reject after the last iteration
    "exact": "Compare trains and planes for short trips",  # a gap of exactly 3: never above the threshold
    "target-wins": "Name the capital city of Australia",  # the target wins by 7
    "biased": "Suggest a name for a grey kitten",  # the judge favours Assistant 1; averaged, a gap of 3
    "garbled": "Describe the smell of rain on asphalt",  # the judge's reply holds no scores
}
SEEDS = ["Plan a weekend trip to the coast.", "Write a haiku about autumn leaves.", "gibberish seed that fails"]
ACTIONS = ["add a deadline", "add a word limit", "ask for sources", "ask for a table"]


def _kind(text: str) -> str:
    found = re.search(r"\(([a-z0-9-]+), ", text)
    assert found is not None, text
    return found[1]


def _judge(prompt: str) -> str:
    question = re.search(r"\[Question\]\n(.*?)\n\n\[Answer of Assistant 1\]", prompt, flags=re.DOTALL)
    first = re.search(r"\[Answer of Assistant 1\]\n(.*?)\n\[End", prompt, flags=re.DOTALL)
    assert question is not None and first is not None
    kind, rounds = _kind(question[1]), question[1].count("(harder: ")
    strong_first = first[1].startswith("Strong answer")
    if kind == "garbled":
        return "Both answers are fine."
    if kind == "biased":  # Assistant 1 gets 10 and 7 (strong first) or 7 and 8 (target first)
        return "10 5" if strong_first else "7 8"
    strong, target = {
        "keep-now": (9, 5),
        "keep-after-2": (9, 4) if rounds >= 2 else (6, 6),
        "never": (6, 6),
        "exact": (8, 5),
        "target-wins": (2, 9),
    }[kind]
    return f"{strong} {target}" if strong_first else f"{target} {strong}"


def reply(request: ChatRequest) -> str:
    """A scripted model for every CodecLM request, strong or target (routed by tag)."""
    prompt = request.messages[-1].content
    if request.tag == ENCODE:
        seed = re.findall(r"Instruction: (.+)", prompt)[-1]
        return "no idea" if "gibberish" in seed else f" {seed.split()[0].lower()} tasks\nSkills: planning, writing"
    if request.tag == DECODE:
        use_case = re.search(r"Use case: (.+)", prompt)
        count = re.search(r"Write (\d+) new", prompt)
        assert use_case is not None and count is not None
        items = [f"{text} ({kind}, {use_case[1]})." for kind, text in KINDS.items()][: int(count[1])]
        return " " + "\n".join(f"{n}. {item}" if n > 1 else item for n, item in enumerate(items, 1))
    if request.tag == RUBRICS:
        actions = "\n".join(f"{n}. {a}" for n, a in enumerate(ACTIONS, 1))
        return f" rubric one\n2. rubric two\n3. rubric three\n4. rubric four\nActions:\n{actions}"
    if request.tag == IMPROVE:
        found = re.search(r"Improvement: (.*)\nInstruction: (.*)\n", prompt)
        assert found is not None
        return f"{found[2]} (harder: {found[1]})"
    if request.tag == JUDGE:
        return _judge(prompt)
    who = {STRONG: "Strong", TARGET: "Target"}[request.tag]
    return f"{who} answer to: {prompt}"


def responder():
    return reply


def write_seeds(tmp_path, seeds=SEEDS):
    path = tmp_path / "seeds.txt"
    path.write_text("\n".join(seeds) + "\n")
    return path


def config(tmp_path, **changes) -> CodeclmConfig:
    return CodeclmConfig(**{"seeds": str(write_seeds(tmp_path)), "instructions_per_metadata": 7, "seed": 3, **changes})


def chunk(cfg: CodeclmConfig, target: ScriptedEngine | None = None):
    strong = ScriptedEngine(reply, model_name="strong-model")
    target = target if target is not None else ScriptedEngine(reply, model_name="target-model")
    gen = CodeclmGenerator(cfg, strong, target, run_id="r")
    return gen.run_chunk(0, load_seed_tasks(cfg.seeds)), strong, target


def requests(engine: ScriptedEngine, tag: str | None = None) -> list[ChatRequest]:
    return [r for call in engine.calls for r in call if tag is None or r.tag == tag]


def test_encoding_puts_each_seeds_metadata_on_its_records_and_a_bad_encoding_is_a_reject(tmp_path):
    out, strong, _ = chunk(config(tmp_path))
    assert len(requests(strong, ENCODE)) == 3
    assert {r.codeclm.use_case for r in out.kept} == {"plan tasks", "write tasks"}
    for record in out.kept:
        assert record.codeclm.skills == "planning; writing"
        assert record.codeclm.use_case in record.codeclm.basic_instruction  # decoded from that metadata
        assert record.codeclm.rubrics.splitlines() == ["rubric one", "rubric two", "rubric three", "rubric four"]
    [bad] = [r for r in out.rejects if r.stage == "parse"]
    assert bad.instruction.startswith("gibberish") and bad.reason == "metadata without skills"
    assert out.counts["seeds"] == 3 and out.counts["metadata"] == 2 and out.counts["basic instructions"] == 14


@pytest.mark.parametrize("iterations", [1, 2, 4])
def test_self_rubrics_runs_the_configured_number_of_rounds(tmp_path, iterations):
    out, strong, target = chunk(config(tmp_path, iterations=iterations))
    never = lambda rs: [r for r in rs if "(never, plan tasks)" in r.messages[-1].content]  # noqa: E731
    # One improvement between iterations; each iteration answers twice and judges twice.
    assert len(never(requests(strong, IMPROVE))) == iterations - 1
    assert len(never(requests(strong, STRONG))) == len(never(requests(target, TARGET))) == iterations
    assert len(never(requests(strong, JUDGE))) == 2 * iterations
    [reject] = [r for r in out.rejects if r.stage == "contrastive" and "(never, plan tasks)" in r.instruction]
    assert reject.codeclm.rounds == iterations - 1 and reject.instruction.count("(harder: ") == iterations - 1
    assert len(reject.codeclm.actions.splitlines()) == iterations - 1
    assert set(reject.codeclm.actions.splitlines()) <= set(ACTIONS)


def test_a_pair_is_kept_only_when_the_gap_exceeds_the_threshold_the_rest_go_back_then_are_rejects(tmp_path):
    out, _, _ = chunk(config(tmp_path))
    kept = {_kind(r.codeclm.basic_instruction): r for r in out.kept if r.codeclm.use_case == "plan tasks"}
    assert set(kept) == {"keep-now", "keep-after-2", "target-wins"}
    assert kept["keep-now"].codeclm.rounds == 0 and kept["keep-now"].round == 0
    assert kept["keep-after-2"].codeclm.rounds == 2 and kept["keep-after-2"].instruction.count("(harder: ") == 2
    assert kept["keep-after-2"].operation == "self-rubrics"
    scored = [r for r in out.rejects if r.codeclm and r.codeclm.gap is not None and r.codeclm.use_case == "plan tasks"]
    rejects = {_kind(r.codeclm.basic_instruction): r for r in scored}
    # A gap of exactly the threshold is not above it: back for improvement, a reject after iteration 4.
    assert {k: r.stage for k, r in rejects.items()} == {
        "never": "contrastive",
        "exact": "contrastive",
        "biased": "contrastive",
    }
    assert all(
        r.reason == "quality gap within 3 after 4 iterations" and r.codeclm.rounds == 3 for r in rejects.values()
    )
    [garbled] = [r for r in out.rejects if r.stage == "judge" and r.codeclm.use_case == "plan tasks"]
    assert garbled.reason == "judge reply without two scores from 1 to 10" and garbled.raw == "Both answers are fine."


def test_scores_are_kept_on_records_and_rejects_alike_averaged_over_both_orders(tmp_path):
    out, _, _ = chunk(config(tmp_path))
    by_kind = {_kind(r.codeclm.basic_instruction): r.codeclm for r in [*out.kept, *out.rejects] if r.codeclm}
    assert (by_kind["keep-now"].strong_score, by_kind["keep-now"].target_score, by_kind["keep-now"].gap) == (9, 5, 4)
    assert (by_kind["exact"].strong_score, by_kind["exact"].target_score, by_kind["exact"].gap) == (8, 5, 3)
    # Strong first: 10 against 5; target first: 7 against 8 (Assistant 1 favoured): averaged 9 and 6.
    assert (by_kind["biased"].strong_score, by_kind["biased"].target_score, by_kind["biased"].gap) == (9, 6, 3)
    assert by_kind["target-wins"].gap == -7 and by_kind["target-wins"].answer == "target"
    assert by_kind["never"].gap == 0


def test_the_strong_and_target_engines_each_answer_only_their_own_requests(tmp_path):
    out, strong, target = chunk(config(tmp_path))
    assert requests(target) and Counter(r.tag for r in requests(target)) == Counter({TARGET: len(requests(target))})
    assert TARGET not in {r.tag for r in requests(strong)}
    assert {ENCODE, DECODE, RUBRICS, IMPROVE, JUDGE, STRONG} == {r.tag for r in requests(strong)}
    for record in out.kept:
        assert (record.codeclm.strong_model, record.codeclm.target_model) == ("strong-model", "target-model")
        if record.codeclm.answer == "strong":
            assert record.output.startswith("Strong answer to: ") and record.model == "strong-model"
        else:
            assert record.output.startswith("Target answer to: ") and record.model == "target-model"
            assert "target-answer" in record.tags
    assert out.counts["target completion tokens"] > 0  # a separate target engine's tokens are counted


def test_without_keeping_target_wins_they_go_back_for_improvement(tmp_path):
    out, _, _ = chunk(config(tmp_path, keep_target_wins=False))
    assert all(r.codeclm.answer == "strong" for r in out.kept)
    wins = [r for r in out.rejects if r.codeclm and "(target-wins," in r.codeclm.basic_instruction]
    assert len(wins) == 2 and {r.stage for r in wins} == {"contrastive"}


def test_one_engine_can_be_both_models(tmp_path):
    cfg = config(tmp_path)
    engine = ScriptedEngine(reply, model_name="same")
    out = CodeclmGenerator(cfg, engine, None, run_id="r").run_chunk(0, load_seed_tasks(cfg.seeds))
    assert out.kept and {r.codeclm.target_model for r in out.kept} == {"same"}
    assert TARGET in {r.tag for r in requests(engine)}
    assert "target completion tokens" not in out.counts  # the run's metered engine counts them


def test_the_paper_defaults():
    cfg = CodeclmConfig()
    assert (cfg.rubrics, cfg.iterations, cfg.threshold) == (4, 4, 3.0)
    assert cfg.generation_sampling.temperature == 0.7 and cfg.judge_sampling.temperature == 0.0


def test_every_template_has_a_chinese_version_and_zh_replies_parse():
    assert "zh" in languages()
    assert TEMPLATES.load("zh").keys() == TEMPLATES.load("en").keys()
    assert parse_metadata("用途：故事创作\n技能：讲故事、儿童文学", "zh") == ("故事创作", ["讲故事", "儿童文学"])
    assert parse_rubrics("评判标准：\n1. 甲\n2. 乙\n改进动作：\n1. 丙", "zh") == (["甲", "乙"], ["丙"])
    assert parse_scores("8 3\nbecause") == (8.0, 3.0) and parse_scores("11 3") is None
    assert len(load_seed_tasks(None, "zh")) > 0


def test_a_structured_judge_asks_for_the_two_scores_as_json_and_reads_them(tmp_path):
    from synth.generators.codeclm_replies import SCORES_SCHEMA

    _, strong, _ = chunk(config(tmp_path, structured_judge=True))
    assert {str(r.json_schema) for r in requests(strong, JUDGE)} == {str(SCORES_SCHEMA)}
    _, plain, _ = chunk(config(tmp_path))
    assert all(r.json_schema is None for r in requests(plain, JUDGE))
    assert parse_scores('{"assistant_1": 9, "assistant_2": 4}') == (9.0, 4.0)
    assert parse_scores('{"assistant_1": 0, "assistant_2": 4}') is None
    assert CodeclmConfig(profile="small-model").structured_judge and not CodeclmConfig().structured_judge
