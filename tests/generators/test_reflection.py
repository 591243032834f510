"""Recycling by reflection with a scripted teacher and student: the teacher's replies parsed as the
reference parses them, and the student's selection rule row by row."""

from __future__ import annotations

import math

import pytest

from synth.engines import ChatRequest, Completion, ScriptedEngine
from synth.engines.base import ContinuationRequest
from synth.generators.reflection import (
    INSTRUCTION,
    RESPONSE,
    RESPONSE_INPUT,
    ReflectionGenerator,
    parse_instruction_reflection,
    parse_response_reflection,
)
from synth.schemas import Example
from synth.schemas.reflection import ReflectionConfig

# -- parsing the teacher ----------------------------------------------------------------------------


def test_an_instruction_reflection_gives_the_text_between_its_markers():
    reply = "1. It is vague.\n2. [New Instruction] Plan a week of meals. [End]\n3. [New Answer] Monday: soup. [End]"
    assert parse_instruction_reflection(reply) == ("Plan a week of meals.", "Monday: soup.")
    # No [End] after the instruction: it ends where the answer's marker starts, less the "3." before it.
    assert parse_instruction_reflection("[New Instruction] Plan it.\n\n3. [New Answer] Soup") == ("Plan it.", "Soup")
    # The plain spelling, and an answer cut off at the token limit (no [End]) still counts.
    assert parse_instruction_reflection("New Instruction: Plan it. New Answer: Soup, then") == (
        "Plan it.",
        "Soup, then",
    )


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        ("The instruction is fine.", "no new instruction"),
        ("[New Instruction] your instruction [End] [New Answer] Soup [End]", "no new instruction"),
        ("[New Instruction] Plan it. [End]", "no new answer"),
        ("[New Instruction] Plan it. [End] [New Answer] N/A [End]", "no new answer"),
        ("[New Instruction] 规划 [End] [New Answer] 你的回答 [End]", "no new answer"),
    ],
)
def test_an_instruction_reflection_without_both_parts_says_which_is_missing(reply, why):
    parsed = parse_instruction_reflection(reply, "zh")
    assert isinstance(parsed, str) and why in parsed


def test_a_response_reflection_must_hold_exactly_one_better_answer():
    assert parse_response_reflection("1. Too short.\n2. [Better Answer] Boil it for ten minutes. [End]") == (
        "Boil it for ten minutes.",
    )
    assert parse_response_reflection("[Better Answer] Cut off at the lim") == ("Cut off at the lim",)
    assert "2 better answers" in str(parse_response_reflection("[Better Answer] x [Better Answer] y [End]"))
    assert "0 better answers" in str(parse_response_reflection("It is already good."))
    assert "no better answer" in str(parse_response_reflection("[Better Answer] your answer [End]"))


# -- the selection rule -----------------------------------------------------------------------------


class Teacher:
    """Instruction reflection of pair i: instruction "new-i", answer "ans-q-i"; response reflection
    of the original answer: "ans-a-i"; of Q's answer: "ans-qa-i". `silent` pairs get no markers."""

    def __init__(self, silent: set[int] = frozenset()) -> None:
        self.silent = silent

    def __call__(self, request: ChatRequest) -> str:
        text = request.messages[-1].content
        i = next(i for i in range(20) if f"old-{i}\n" in text or f"new-{i}\n" in text)
        if i in self.silent:
            return "It is fine as it is."
        if request.tag == INSTRUCTION:
            return f"1. Vague.\n2. [New Instruction] new-{i} [End]\n3. [New Answer] ans-q-{i} [End]"
        assert request.tag in (RESPONSE, RESPONSE_INPUT)
        return f"1. Thin.\n2. [Better Answer] ans-{'qa' if f'new-{i}' in text else 'a'}-{i} [End]"


class Student:
    """Log-probabilities that give each answer its scripted IFD and r-IFD (as ratios of
    perplexities): the loss alone is 1 per token, the loss given the instruction (or, reversed, given
    the answer) is 1 + ln(ratio)."""

    def __init__(self, ifd: dict[str, float], r_ifd: dict[str, float]) -> None:
        self.ifd, self.r_ifd = ifd, r_ifd

    def __call__(self, request: ContinuationRequest) -> list[float]:
        n = max(1, len(request.continuation.split()))
        if request.context == "### Response:\n":  # alone
            return [-1.0] * n
        if "Work out which instruction it answers" in request.context:  # reversed: the instruction given the answer
            answer = next(a for a in self.r_ifd if f"\n{a}\n" in request.context)
            return [-(1.0 + math.log(self.r_ifd[answer]))] * n
        return [-(1.0 + math.log(self.ifd[request.continuation]))] * n


def pairs(n: int) -> list[Example]:
    return [Example(instruction=f"old-{i}", output=f"ans-o-{i}", id=f"src-{i}") for i in range(n)]


# One row per source pair: (IFD of original, Q, A, QA), (r-IFD of original, Q, A, QA), what is written.
RULE = [
    ((0.5, 0.7, 0.6, 0.6), (0.8, 0.8, 0.9, 0.7), "instruction+response"),  # Q harder; QA easier to guess
    ((0.5, 0.7, 0.6, 0.6), (0.8, 0.8, 0.5, 0.9), None),  # Q harder; QA not easier to guess: nothing (not A)
    ((0.5, 0.4, 0.6, 0.6), (0.8, 0.8, 0.7, 0.5), "response"),  # Q not harder; A easier to guess
    ((0.5, 0.4, 0.6, 0.6), (0.8, 0.8, 0.9, 0.5), None),  # Q not harder; A not easier to guess: nothing
    ((0.5, 0.7, 0.6, 1.2), (0.8, 0.8, 0.9, 0.7), None),  # QA chosen, but its IFD is not below 1
    ((0.5, 0.4, 0.6, 0.6), (1.3, 0.8, 1.1, 0.5), None),  # A easier to guess, but its r-IFD is not below 1
]


def scripted_student() -> Student:
    ifd, r_ifd = {}, {}
    for i, (ifds, r_ifds, _) in enumerate(RULE):
        for kind, value, r_value in zip(("o", "q", "a", "qa"), ifds, r_ifds, strict=True):
            ifd[f"ans-{kind}-{i}"], r_ifd[f"ans-{kind}-{i}"] = value, r_value
    return Student(ifd, r_ifd)


def test_the_student_keeps_qa_or_a_by_ifd_and_reversed_ifd_as_the_reference_selects_row_by_row():
    generator = ReflectionGenerator(
        ReflectionConfig(source="unused"), ScriptedEngine(Teacher()), ScriptedEngine(scorer=scripted_student())
    )
    result = generator.run_chunk(0, pairs(len(RULE)))
    written = {r.parent_id: r for r in result.kept}
    for i, (ifds, r_ifds, expected) in enumerate(RULE):
        record = written.get(f"src-{i}")
        assert (record.reflection.variant if record else None) == expected, f"row {i}"
        if record is not None:
            column = ("o", "q", "a", "qa").index("qa" if expected == "instruction+response" else "a")
            assert record.reflection.ifd == pytest.approx(ifds[column])
            assert record.reflection.r_ifd == pytest.approx(r_ifds[column])
            assert record.reflection.original_ifd == pytest.approx(ifds[0])
            assert (
                record.reflection.original_instruction == f"old-{i}"
                and record.reflection.original_output == f"ans-o-{i}"
            )
            assert "recycled" in record.tags and record.source_id == f"src-{i}"
    assert [r.instruction for r in result.kept] == ["new-0", "old-2"]
    assert result.kept[0].output == "ans-qa-0" and result.kept[1].output == "ans-a-2"
    # Every variant made and not written is a reject with its scores and why.
    by_row = {}
    for reject in result.rejects:
        assert reject.stage == "reflection" and reject.reflection is not None and reject.reason
        by_row.setdefault(reject.parent_id, {})[reject.reflection.variant] = reject.reason
    assert set(by_row["src-0"]) == {"instruction", "response"}  # Q and A, beside the QA written
    assert "r-IFD not below the new instruction's" in by_row["src-1"]["instruction+response"]
    assert "only QA can be written" in by_row["src-1"]["response"]
    assert "IFD is not above the original's" in by_row["src-3"]["instruction"]
    assert "r-IFD not below the original's" in by_row["src-3"]["response"]
    assert by_row["src-4"]["instruction+response"] == "IFD or r-IFD not below 1"
    assert by_row["src-5"]["response"] == "IFD or r-IFD not below 1"
    assert result.written == {"instruction+response": 1, "response": 1}


def test_without_student_selection_every_pair_reflected_on_both_is_written_and_the_student_unused():
    student = ScriptedEngine(scorer=scripted_student())
    generator = ReflectionGenerator(
        ReflectionConfig(source="unused", selection="none"), ScriptedEngine(Teacher()), student
    )
    result = generator.run_chunk(0, pairs(3))
    assert [r.output for r in result.kept] == ["ans-qa-0", "ans-qa-1", "ans-qa-2"]
    assert not student.scored
    assert {r.reflection.variant for r in result.rejects} == {"instruction"}


def test_a_reply_without_markers_is_asked_again_then_rejected_with_the_reply():
    teacher = ScriptedEngine(Teacher(silent={1}))
    generator = ReflectionGenerator(
        ReflectionConfig(source="unused"), teacher, ScriptedEngine(scorer=scripted_student())
    )
    result = generator.run_chunk(0, pairs(2))
    failed = [r for r in result.rejects if r.parent_id == "src-1" and r.reflection.variant == "original"]
    assert sorted(r.reason for r in failed) == [
        "instruction reflection: no new instruction between the markers",
        "response reflection: 0 better answers between the markers (one expected)",
    ]
    assert all(r.raw == "It is fine as it is." for r in failed)
    asked = [r for batch in teacher.calls for r in batch if "old-1\n" in r.messages[-1].content]
    assert len(asked) == 4  # each of its two reflections asked twice (reask 1, the reference's one retry)


def test_an_engine_error_is_an_engine_reject_and_a_pair_without_response_is_not_sent():
    def teacher(request: ChatRequest):
        return Completion(text="", finish_reason="error", error="server gone")

    generator = ReflectionGenerator(
        ReflectionConfig(source="unused"), ScriptedEngine(teacher), ScriptedEngine(scorer=scripted_student())
    )
    result = generator.run_chunk(0, [*pairs(1), Example(instruction="old-9", output="  ", id="empty")])
    assert not result.kept
    assert {(r.stage, r.reason.split(":")[0]) for r in result.rejects if r.parent_id == "src-0"} == {
        ("engine", "instruction reflection"),
        ("engine", "response reflection"),
    }
    assert [r.reason for r in result.rejects if r.parent_id == "empty"] == ["no response to reflect on"]


def test_a_student_that_cannot_score_continuations_is_refused_unless_nothing_is_scored():
    class ChatOnly:
        model_name = "chat-only"

        def chat(self, requests):
            return []

    with pytest.raises(ValueError, match="cannot score continuations"):
        ReflectionGenerator(ReflectionConfig(source="x"), ScriptedEngine(Teacher()), ChatOnly())  # type: ignore[arg-type]
    ReflectionGenerator(ReflectionConfig(source="x", selection="none"), ScriptedEngine(Teacher()), ChatOnly())  # type: ignore[arg-type]


def test_with_prefilled_markers_each_reply_is_read_as_continuing_its_marker():
    def teacher(request: ChatRequest) -> str:
        if request.prefill == "[New Instruction]":
            return " Plan a menu. [End]\n[New Answer] Soup."
        assert request.prefill == "[Better Answer]"
        return " Boil it for ten minutes."

    config = ReflectionConfig(source="x", prefill_markers=True, selection="none")
    result = ReflectionGenerator(config, ScriptedEngine(teacher)).run_chunk(0, pairs(1))
    assert [(r.instruction, r.output) for r in result.kept] == [("Plan a menu.", "Boil it for ten minutes.")]
    assert ReflectionConfig(source="x", profile="small-model").prefill_markers
    assert not ReflectionConfig(source="x").prefill_markers  # the paper's prompts ask for the markers


def test_two_source_pairs_of_the_same_text_give_rejects_of_their_own():
    twins = [
        Example(instruction="old-0", output="ans-o-0", id="x"),
        Example(instruction="old-0", output="ans-o-0", id="x-2"),
    ]
    teacher = ScriptedEngine(Teacher(silent={0}))
    result = ReflectionGenerator(
        ReflectionConfig(source="x", reask=0), teacher, ScriptedEngine(scorer=scripted_student())
    ).run_chunk(0, twins)
    assert len(result.rejects) == 4 and len({r.id for r in result.rejects}) == 4
    assert {r.parent_id for r in result.rejects} == {"x", "x-2"}


def test_the_paper_defaults_are_the_reference_codes():
    """reflect_*.py: gpt-3.5-turbo at temperature 0, top-p 1, up to 2048 tokens, one retry of a
    reply that does not parse; data_analysis.py: the student reads up to 2048 tokens;
    get_select_data.py: the student selects."""
    config = ReflectionConfig(source="x")
    sampling = config.teacher_sampling
    assert (sampling.temperature, sampling.top_p, sampling.max_tokens) == (0.0, 1.0, 2048)
    assert (config.reask, config.student_max_tokens, config.selection) == (1, 2048, "student")
    assert not config.prefill_markers
