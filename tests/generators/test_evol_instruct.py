"""Evol-Instruct with a scripted engine: prompts, each elimination rule, rounds, lineage, determinism."""

from __future__ import annotations

import json
import random
import re

import pytest

from synth.engines import ChatRequest, Completion, ScriptedEngine
from synth.generators.evol_instruct import (
    OPERATIONS,
    EvolInstructGenerator,
    carries_structured_input,
    leak_reason,
    parse_equality,
)
from synth.generators.sources import SourceItem
from synth.schemas import EvolInstructConfig

SOURCE = [
    SourceItem("s1", "Explain how rainbows form."),
    SourceItem("s2", "Sort the numbers in ascending order.", "5, 3, 9, 1"),
    SourceItem("s3", "Give three tips for better sleep."),
]


def original(request: ChatRequest) -> str:
    return request.messages[0].content.split("### Original instruction\n", 1)[1].rsplit("\n\n###", 1)[0]


class EvolScript:
    """Evolves by appending the operation name, says "not equal", and answers at length."""

    def __init__(
        self, verdict: str = '{"verdict": "not equal"}', response: str = "A full answer with real content."
    ) -> None:
        self.verdict = verdict
        self.response = response

    def __call__(self, request: ChatRequest) -> str | Completion:
        if request.tag == "evol_equality":
            return self.verdict
        if request.tag == "evol_response":
            return self.response
        op = request.tag.removeprefix("evol_")
        return f"{original(request)} Also {op}."


def make(responder, **config) -> EvolInstructGenerator:
    config.setdefault("rounds", 1)
    return EvolInstructGenerator(EvolInstructConfig(source="unused", **config), ScriptedEngine(responder), run_id="evo")


def test_each_operation_has_its_own_prompt_holding_the_instruction():
    gen = make(EvolScript())
    prompts = {op: gen.evolve_request(op, "Explain tides.", (0, 1, 0)).messages[0].content for op in OPERATIONS}
    assert len(set(prompts.values())) == len(OPERATIONS)
    assert all("Explain tides." in p for p in prompts.values())
    assert "one more constraint" in prompts["add_constraints"]
    assert "more specific" in prompts["concretize"]
    assert "several steps" in prompts["increase_reasoning"]
    assert "more depth" in prompts["deepen"]
    assert "input" in prompts["complicate_input"] and "rarer" in prompts["breadth"]
    assert all(
        "non-text part" in prompts[op] for op in ("add_constraints", "deepen", "concretize", "increase_reasoning")
    )


def test_complicate_input_is_drawn_only_for_instructions_with_structured_input():
    gen = make(EvolScript(), operation_weights={"complicate_input": 10.0, "deepen": 1.0})
    rng = random.Random(0)
    plain = {gen.choose(rng, "Explain how rainbows form.") for _ in range(200)}
    data = {gen.choose(rng, "Sort the numbers.\n\n5, 3, 9, 1") for _ in range(200)}
    assert plain == {"deepen"}
    assert "complicate_input" in data
    assert carries_structured_input("Fix this:\n```python\nprint(1)\n```")
    assert carries_structured_input("| a | b |\n|---|---|")
    assert not carries_structured_input("Write a haiku about the sea.")


def test_operation_weights_are_validated():
    with pytest.raises(ValueError, match="unknown operations"):
        EvolInstructConfig(source="x", operation_weights={"shout": 1.0})
    with pytest.raises(ValueError, match="at least one positive"):
        EvolInstructConfig(source="x", operation_weights={"deepen": 0.0})


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ('{"verdict": "equal"}', True),
        ('{"verdict": "not equal"}', False),
        ("equal", True),
        ("Equal.", True),
        ("not equal", False),
        ("Not equal", False),
        ("unequal", None),
        ("They are equal", None),
        ("equal, but not equal", None),
        ('{"verdict": "the same"}', None),
        ('{"verdict": 1}', None),
        ("", None),
    ],
)
def test_equality_verdict_is_parsed_strictly_and_not_equal_is_never_equal(reply, expected):
    assert parse_equality(reply) is expected


@pytest.mark.parametrize(
    ("evolved", "reason"),
    [
        ("", "empty evolution"),
        ("  explain   how rainbows FORM. ", "unchanged instruction"),
        ("### Rewritten instruction\nExplain rainbows in depth.", "leaked rewriting prompt (###)"),
        ("Here is the rewritten prompt: explain rainbows.", "leaked rewriting prompt (rewritten prompt)"),
        ("As in the given prompt, explain rainbows.", "leaked rewriting prompt (given prompt)"),
        ("Explain how double rainbows form, with the angles involved.", None),
    ],
)
def test_leak_empty_and_unchanged_rules(evolved, reason):
    assert leak_reason("Explain how rainbows form.", evolved) == reason


def eliminated(result) -> dict[str, int]:
    return {reason: n for funnel in result.rounds.values() for reason, n in funnel.eliminated.items()}


@pytest.mark.parametrize(
    ("script", "reason"),
    [
        (EvolScript(verdict='{"verdict": "equal"}'), "no information gain (judged equal to its parent)"),
        (EvolScript(verdict="maybe"), "unparseable equality verdict"),
        (EvolScript(response="Sorry, I cannot help with that."), "response is a short refusal"),
        (EvolScript(response="It is, and so on... yes!"), "response is only punctuation and stop words"),
        (
            lambda r: (
                original(r)
                if r.tag.startswith("evol_") and r.tag not in ("evol_equality", "evol_response")
                else EvolScript()(r)
            ),
            "unchanged instruction",
        ),
    ],
)
def test_each_elimination_rule_rejects_with_its_reason(script, reason):
    result = make(script).run_chunk(0, SOURCE)
    assert result.kept == []
    assert eliminated(result) == {reason: len(SOURCE)}
    assert all(
        r.stage == "evolution" and r.reason == reason and r.parent_id in {"s1", "s2", "s3"} for r in result.rejects
    )


def test_long_answer_mentioning_sorry_is_not_a_refusal():
    long_answer = "I am sorry to hear about the trouble; " + " ".join(["here is a detailed plan"] * 20)
    result = make(EvolScript(response=long_answer)).run_chunk(0, SOURCE)
    assert len(result.kept) == len(SOURCE)


def test_unparseable_verdict_keeps_the_raw_reply():
    result = make(EvolScript(verdict="I think so")).run_chunk(0, SOURCE[:1])
    [reject] = result.rejects
    assert reject.raw == "I think so" and reject.instruction.endswith(".")


def test_rounds_evolve_survivors_and_retry_parents_of_failed_evolutions():
    calls = {"n": 0}

    def flaky(request: ChatRequest) -> str:
        # Round 1: the judge calls s1's evolution equal (eliminated); everything else succeeds.
        if request.tag == "evol_equality":
            calls["n"] += 1
            first = request.messages[0].content.split("First instruction:\n", 1)[1]
            if calls["n"] <= len(SOURCE) and first.startswith("Explain how rainbows"):
                return '{"verdict": "equal"}'
            return '{"verdict": "not equal"}'
        return EvolScript()(request)

    result = make(flaky, rounds=3).run_chunk(0, SOURCE)
    assert [result.rounds[r].entered for r in (1, 2, 3)] == [3, 3, 3]
    assert result.rounds[1].evolved == 2 and result.rounds[2].evolved == 3
    by_id = {r.id: r for r in result.kept}
    s1 = [r for r in result.kept if r.root_id == "s1"]
    # s1 failed in round 1, so its first evolution is in round 2 and its parent is the source.
    assert min(r.round for r in s1) == 2
    assert next(r for r in s1 if r.round == 2).parent_id == "s1"
    for record in result.kept:
        parent = by_id.get(record.parent_id)
        if parent is None:
            assert record.parent_id == record.root_id  # evolved straight from the source
        else:
            assert parent.round < record.round and parent.root_id == record.root_id
            assert parent.instruction in record.instruction  # the script appends to its input


def test_lineage_traces_every_record_to_a_source_instruction():
    result = make(EvolScript(), rounds=4).run_chunk(0, SOURCE)
    by_id = {r.id: r for r in result.kept}
    for record in result.kept:
        steps, node = 0, record
        while node.parent_id in by_id:
            node, steps = by_id[node.parent_id], steps + 1
        assert node.parent_id == record.root_id and record.root_id in {"s1", "s2", "s3"}
        assert steps == record.round - 1


def test_input_is_folded_into_the_evolved_instruction():
    result = make(EvolScript()).run_chunk(0, SOURCE[1:2])
    [record] = result.kept
    assert "5, 3, 9, 1" in record.instruction and record.input == ""
    assert record.output == "A full answer with real content."
    assert record.generator == "evol_instruct" and record.operation in OPERATIONS and record.round == 1


def test_engine_errors_and_truncated_evolutions_are_eliminated():
    def broken(request: ChatRequest):
        if request.tag.startswith("evol_") and request.tag not in ("evol_equality", "evol_response"):
            if "rainbows" in request.messages[0].content:
                return Completion(text="", finish_reason="error", error="timeout")
            return Completion(text="A long rewrite that never", finish_reason="length")
        return EvolScript()(request)

    result = make(broken).run_chunk(0, SOURCE)
    assert eliminated(result) == {"engine error": 1, "evolution cut off at the token limit": 2}


def test_same_seed_repeats_and_another_seed_draws_other_operations():
    def run(seed: int):
        result = make(EvolScript(), rounds=3, seed=seed).run_chunk(0, SOURCE * 1)
        return [(r.operation, r.instruction) for r in result.kept]

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_equality_requests_ask_for_structured_output():
    engine = ScriptedEngine(EvolScript())
    gen = EvolInstructGenerator(EvolInstructConfig(source="x", rounds=1), engine)
    gen.run_chunk(0, SOURCE[:1])
    [judge] = [r for call in engine.calls for r in call if r.tag == "evol_equality"]
    assert set(judge.json_schema["properties"]["verdict"]["enum"]) == {"equal", "not equal"}
    assert json.loads(EvolScript().verdict)["verdict"] == "not equal"
    assert re.search("Explain how rainbows form.", judge.messages[0].content)
