"""Preference pairs: K responses per instruction, graded, best against worst; ties, small margins,
unparseable grades and flipping side-by-side verdicts are rejects with their reason and raw text."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from synth.engines import ChatRequest, Completion, ScriptedEngine
from synth.filters.judge import GRADE_SCHEMA
from synth.generators.preferences import (
    COMPARE,
    COMPARE_SCHEMA,
    FEW,
    FLIPS,
    GRADE,
    PREFERS_REJECTED,
    RESPONSE,
    TIE,
    UNPARSEABLE_GRADE,
    UNPARSEABLE_VERDICT,
    PreferencesGenerator,
    parse_verdict,
)
from synth.prompts import load_template
from synth.schemas import Example
from synth.schemas.preferences import PreferencesConfig

_ANSWER = re.compile(r"\[TEXT START\]\n(answer \d+ to [^\n]*)\n\[TEXT END\]")


class Script:
    """Response n to a prompt is "answer n to PROMPT" (counted per prompt, so with one writer n is
    the response's number); its grade reply comes from `grades[PROMPT][n]`: an int becomes
    structured output, a string is sent as it is, a list is consumed one grade request at a time.
    Side by side, `prefer(first, second)` names the better answer ("A"/"B"/raw text)."""

    def __init__(self, grades, prefer=None, label: str = "answer") -> None:
        self.grades = grades
        self.prefer = prefer or (lambda first, second: "A" if self.score(first) >= self.score(second) else "B")
        self.label = label
        self.counts: Counter[str] = Counter()
        self.requests: list[ChatRequest] = []

    def score(self, answer: str) -> int:
        prompt, n = answer.split(" to ", 1)[1], int(answer.split()[1])
        grade = self.grades[prompt][n]
        return grade[0] if isinstance(grade, list) else grade

    def __call__(self, request: ChatRequest):
        self.requests.append(request)
        if request.tag == RESPONSE:
            prompt = request.messages[-1].content
            n = self.counts[prompt]
            self.counts[prompt] += 1
            return f"{self.label} {n} to {prompt}"
        text = request.messages[0].content
        answers = _ANSWER.findall(text)
        if request.tag == GRADE:
            (answer,) = answers
            prompt, n = answer.split(" to ", 1)[1], int(answer.split()[1])
            grade = self.grades[prompt][n]
            if isinstance(grade, list):
                grade = grade.pop(0)
            if isinstance(grade, int):
                return json.dumps({"rationale": f"{answer} is worth {grade}", "score": grade})
            return grade
        assert request.tag == COMPARE and len(answers) == 2
        verdict = self.prefer(*answers)
        return json.dumps({"rationale": "compared", "better": verdict}) if verdict in ("A", "B") else verdict


def items(*prompts: str) -> list[Example]:
    return [Example(p, id=f"id{i}") for i, p in enumerate(prompts)]


def generate(script, prompts, writers=(), **config):
    config = {"source": "unused", "judge_samples": 1, **config}
    engine = ScriptedEngine(script, model_name="judge-model")
    gen = PreferencesGenerator(PreferencesConfig(**config), engine, run_id="p", writers=writers)
    return gen.run_chunk(0, items(*prompts))


def test_the_best_and_the_worst_graded_responses_make_the_pair():
    script = Script({"Explain tides.": [3, 5, 1, 4]})
    result = generate(script, ["Explain tides."])
    assert not result.rejects and result.paired == 1 and result.instructions == 1
    (pair,) = result.kept
    assert (pair.preferences.chosen, pair.preferences.rejected) == (
        "answer 1 to Explain tides.",
        "answer 2 to Explain tides.",
    )
    assert (pair.preferences.chosen_score, pair.preferences.rejected_score) == (5.0, 1.0)
    assert pair.preferences.chosen_rationale == "answer 1 to Explain tides. is worth 5"
    assert pair.preferences.rejected_rationale == "answer 2 to Explain tides. is worth 1"
    assert pair.preferences.chosen_model == pair.preferences.rejected_model == pair.model == "judge-model"
    assert pair.output == pair.preferences.chosen and pair.instruction == "Explain tides."
    assert [(m.role, m.content) for m in pair.messages] == [
        ("user", "Explain tides."),
        ("assistant", pair.preferences.chosen),
    ]
    assert pair.generator == "preferences" and pair.source_id == "id0" and pair.parent_id is None
    assert pair.template == GRADE and pair.template_hash == load_template(GRADE).hash
    responses = [r for r in script.requests if r.tag == RESPONSE]
    grades = [r for r in script.requests if r.tag == GRADE]
    assert len(responses) == 4 and len({r.sampling.seed for r in responses}) == 4  # distinct seeds
    assert {r.sampling.temperature for r in responses} == {0.7}  # the paper profile's
    assert len(grades) == 4 and all(r.json_schema == GRADE_SCHEMA for r in grades)
    assert list(GRADE_SCHEMA["properties"]) == ["rationale", "score"]  # rationale first


def test_among_equal_best_scores_the_earlier_response_is_chosen_and_the_run_is_repeatable():
    first = generate(Script({"Q one?": [4, 4, 2, 2]}), ["Q one?"])
    again = generate(Script({"Q one?": [4, 4, 2, 2]}), ["Q one?"])
    assert (first.kept[0].preferences.chosen, first.kept[0].preferences.rejected) == (
        "answer 0 to Q one?",
        "answer 2 to Q one?",
    )
    assert [r.id for r in first.kept] == [r.id for r in again.kept]


def test_a_tie_is_a_reject_with_the_judges_raw_replies():
    result = generate(Script({"Tie?": [3, 3, 3, 3], "Fine?": [2, 5, 2, 2]}), ["Tie?", "Fine?"])
    assert [r.instruction for r in result.kept] == ["Fine?"]
    (tie,) = result.rejects
    assert (tie.stage, tie.phase, tie.reason) == ("preference", "generation", TIE)
    assert tie.detail == "every response graded 3" and tie.instruction == "Tie?"
    raw = json.loads(tie.raw)
    assert len(raw) == 4 and json.loads(raw["response 0"][0])["score"] == 3


def test_a_margin_under_the_minimum_is_a_reject_that_keeps_the_would_be_pair():
    result = generate(Script({"Close?": [3, 4], "Far?": [2, 4]}), ["Close?", "Far?"], samples=2, min_margin=2)
    assert [r.instruction for r in result.kept] == ["Far?"]
    (close,) = result.rejects
    assert (close.stage, close.reason, close.detail) == ("preference", "margin under 2", "margin 1.00")
    assert (close.preferences.chosen, close.preferences.rejected) == ("answer 1 to Close?", "answer 0 to Close?")
    assert (close.preferences.chosen_score, close.preferences.rejected_score) == (4.0, 3.0)


def test_an_unparseable_grade_is_a_reject_with_the_raw_reply_and_the_rest_still_pair():
    script = Script({"Q?": [5, "I think it is fine.", 1], "R?": ["???", 4, '{"score": 9}']})
    result = generate(script, ["Q?", "R?"], samples=3)
    (pair,) = result.kept
    assert (pair.preferences.chosen, pair.preferences.rejected) == ("answer 0 to Q?", "answer 2 to Q?")
    by_reason = {(r.instruction, r.reason): r for r in result.rejects}
    assert set(by_reason) == {("Q?", UNPARSEABLE_GRADE), ("R?", UNPARSEABLE_GRADE), ("R?", FEW)}
    bad = by_reason[("Q?", UNPARSEABLE_GRADE)]
    assert (bad.stage, bad.raw, bad.output, bad.detail) == (
        "preference",
        "I think it is fine.",
        "answer 1 to Q?",
        "response 1",
    )
    assert by_reason[("R?", FEW)].detail == "1 of 3"  # a score out of range does not parse either
    assert len(result.rejects) == 4 and len({r.id for r in result.rejects}) == 4


def test_a_score_line_outside_json_still_grades():
    result = generate(Script({"Q?": ["Good answer.\nScore: 4", 2]}), ["Q?"], samples=2)
    assert (
        result.kept[0].preferences.chosen_score == 4.0 and result.kept[0].preferences.chosen_rationale == "Good answer."
    )


def test_grades_of_a_response_are_averaged_over_judge_samples():
    script = Script({"Q?": [[5, 4, 4], [2, 2, 3]]})
    result = generate(script, ["Q?"], samples=2, judge_samples=3)
    (pair,) = result.kept
    assert pair.preferences.chosen_score == pytest.approx(13 / 3) and pair.preferences.rejected_score == pytest.approx(
        7 / 3
    )
    seeds = [r.sampling.seed for r in script.requests if r.tag == GRADE]
    assert len(seeds) == 6 and len(set(seeds)) == 6


def test_one_unparseable_grade_among_judge_samples_leaves_the_response_ungraded():
    script = Script({"Q?": [[5, "junk", 5], [2, 2, 2], [3, 3, 3]]})
    result = generate(script, ["Q?"], samples=3, judge_samples=3)
    (pair,) = result.kept
    assert (pair.preferences.chosen, pair.preferences.chosen_score) == ("answer 2 to Q?", 3.0)
    (bad,) = result.rejects
    assert bad.reason == UNPARSEABLE_GRADE and bad.raw == "junk"


def test_failed_and_empty_responses_are_rejects_not_candidates():
    def respond(request: ChatRequest):
        if request.tag == RESPONSE:
            n = sum(r.tag == RESPONSE for r in seen)
            seen.append(request)
            return [Completion(text="", finish_reason="error", error="boom"), "  ", "plain-answer", "best-answer"][n]
        score = 5 if "best-answer" in request.messages[0].content else 2
        return json.dumps({"rationale": "r", "score": score})

    seen: list[ChatRequest] = []
    engine = ScriptedEngine(respond)
    gen = PreferencesGenerator(PreferencesConfig(source="x", judge_samples=1), engine)
    result = gen.run_chunk(0, items("Q?"))
    assert (result.kept[0].preferences.chosen, result.kept[0].preferences.rejected) == ("best-answer", "plain-answer")
    reasons = sorted((r.stage, r.reason, r.detail) for r in result.rejects)
    assert reasons == [("engine", "engine error", "response 0: boom"), ("preference", "empty response", "response 1")]
    assert len({r.id for r in result.rejects}) == 2


def test_several_engines_write_the_responses_in_turn_and_the_pair_names_their_models():
    main = Script({"Q?": [1, 5, 1, 1]})
    other = Script({"Q?": [1, 5, 1, 1]}, label="other")

    def judge(request: ChatRequest):
        if request.tag == RESPONSE:
            return main(request)
        # the second engine's answers ("other n") are its responses 1 and 3: graded 5 and 1
        content = request.messages[0].content
        score = 5 if "other 0 to" in content else 2 if "answer 0" in content else 1
        return json.dumps({"rationale": "r", "score": score})

    engine = ScriptedEngine(judge, model_name="model-a")
    writer = ScriptedEngine(other, model_name="model-b")
    gen = PreferencesGenerator(PreferencesConfig(source="x", judge_samples=1), engine, writers=[writer])
    (pair,) = gen.run_chunk(0, items("Q?")).kept
    assert [r.sampling.seed for r in other.requests] != [r.sampling.seed for r in main.requests]
    assert len(main.requests) == len(other.requests) == 2
    assert (pair.preferences.chosen, pair.preferences.chosen_model) == ("other 0 to Q?", "model-b")
    assert pair.preferences.rejected_model == "model-a" and pair.model == "model-b"


@pytest.mark.parametrize(
    ("prefer", "reason"),
    [
        (lambda first, second: "A", FLIPS),  # always the first shown: position bias
        (lambda first, second: "B", FLIPS),
        (lambda first, second: "B" if first.startswith("answer 1") else "A", PREFERS_REJECTED),
        (lambda first, second: "Both are fine.", UNPARSEABLE_VERDICT),
    ],
)
def test_a_side_by_side_verdict_that_flips_or_disagrees_is_a_reject(prefer, reason):
    script = Script({"Q?": [2, 5]}, prefer=prefer)
    result = generate(script, ["Q?"], samples=2, position_check=True)
    assert not result.kept
    (reject,) = result.rejects
    assert (reject.stage, reject.reason) == ("preference", reason)
    assert (reject.preferences.chosen, reject.preferences.rejected) == ("answer 1 to Q?", "answer 0 to Q?")
    assert set(json.loads(reject.raw)) == {"chosen first", "chosen second"}
    # The flip rate counts pairs with two verdicts, and those that flipped.
    assert (result.position_checked, result.flipped) == (
        (0, 0) if reason == UNPARSEABLE_VERDICT else (1, int(reason == FLIPS))
    )


def test_a_consistent_side_by_side_verdict_keeps_the_pair_after_both_orders_were_asked():
    script = Script({"Q?": [2, 5]})
    result = generate(script, ["Q?"], samples=2, position_check=True)
    assert [r.preferences.chosen for r in result.kept] == ["answer 1 to Q?"]
    assert (result.position_checked, result.flipped) == (1, 0)
    compares = [r for r in script.requests if r.tag == COMPARE]
    assert len(compares) == 2 and all(r.json_schema == COMPARE_SCHEMA for r in compares)
    shown = [_ANSWER.findall(r.messages[0].content) for r in compares]
    assert shown == [["answer 1 to Q?", "answer 0 to Q?"], ["answer 0 to Q?", "answer 1 to Q?"]]


def test_the_side_by_side_check_is_off_by_default():
    script = Script({"Q?": [2, 5]})
    generate(script, ["Q?"], samples=2)
    assert PreferencesConfig(source="x").position_check is False
    assert not [r for r in script.requests if r.tag == COMPARE]


def test_parse_verdict_reads_json_or_a_last_better_line_and_nothing_else():
    assert parse_verdict('{"rationale": "x", "better": "B"}') == "B"
    assert parse_verdict('{"rationale": "x", "better": "C"}') is None
    assert parse_verdict("A is longer.\nBetter: A") == "A"
    assert parse_verdict("They are equal.") is None


def test_defaults_are_self_rewarding_and_the_small_model_profile_grades_once_greedily():
    paper = PreferencesConfig(source="x")
    assert (paper.samples, paper.judge_samples, paper.min_margin) == (4, 3, 0.0)
    assert (paper.response_sampling.temperature, paper.response_sampling.top_p) == (0.7, 0.9)
    small = PreferencesConfig(source="x", profile="small-model")
    assert small.judge_samples == 1 and small.judge_sampling.temperature == 0.0
    assert PreferencesConfig(source="x", profile="small-model", judge_samples=2).judge_samples == 2


def test_a_chinese_run_uses_the_chinese_templates_with_the_english_markers():
    script = Script({"潮汐是怎么形成的？": [2, 5]})
    result = generate(script, ["潮汐是怎么形成的？"], samples=2, language="zh", position_check=True)
    assert result.kept and result.kept[0].template == f"zh/{GRADE}"
    grade = load_template(GRADE, "zh").text
    compare = load_template(COMPARE, "zh").text
    assert '{"rationale": "...", "score": N}' in grade and "Score: N" in grade
    assert '{"rationale": "...", "better": "A"}' in compare and "Better: A" in compare
