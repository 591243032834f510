"""Evol-Instruct with a scripted engine: the paper's settings and elimination rules, prompts, round 0,
rounds, lineage, determinism, and what the `small-model` profile changes."""

from __future__ import annotations

import json
import random
import re

import pytest

from synth.engines import ChatRequest, Completion, ScriptedEngine
from synth.generators.evol_eliminations import EQUALITY_SCHEMA, leak_reason, parse_equality, response_failure
from synth.generators.evol_instruct import ANSWER_LABEL, OPERATIONS, SECTION_LABELS, EvolInstructGenerator
from synth.schemas import EvolInstructConfig, Example, content_id
from synth.schemas.config import SamplingConfig

SOURCE = [
    Example("Explain how rainbows form.", id="s1"),
    Example("Sort the numbers in ascending order.", input="5, 3, 9, 1", id="s2"),
    Example("Give three tips for better sleep.", id="s3"),
]


def original(request: ChatRequest) -> str:
    """The instruction an evolving prompt holds (between its "#Given Prompt#:" and answer labels)."""
    return request.messages[-1].content.rsplit("#Given Prompt#:\n", 1)[1].rsplit("\n\n#", 1)[0]


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
    """A generator on the paper's settings; round 0 is left out unless asked for, so that these
    tests see the evolutions alone."""
    config.setdefault("rounds", 1)
    config.setdefault("include_source", False)
    return EvolInstructGenerator(EvolInstructConfig(source="unused", **config), ScriptedEngine(responder), run_id="evo")


def honour_stops(responder):
    """The responder's reply cut at the first of the request's stop strings, as an engine cuts it."""

    def reply(request: ChatRequest) -> str:
        text = responder(request)
        for stop in request.stop:
            text = text.split(stop, 1)[0]
        return text

    return reply


# -- the paper's settings --------------------------------------------------------------------------


def test_paper_profile_samples_as_the_reference_code_and_sends_its_system_message():
    config = EvolInstructConfig(source="x")
    assert config.profile == "paper"
    for sampling in (config.evolve_sampling, config.response_sampling):
        assert (sampling.temperature, sampling.top_p, sampling.max_tokens) == (1.0, 0.95, 2048)
    assert config.include_source and not config.extra_eliminations and not config.prefill_evolution
    engine = ScriptedEngine(EvolScript())
    EvolInstructGenerator(config.model_copy(update={"rounds": 1}), engine).run_chunk(0, SOURCE[:1])
    requests = [r for call in engine.calls for r in call]
    assert {r.tag for r in requests} >= {"evol_response", "evol_equality"} and len(requests) >= 4
    for request in requests:
        system, user = request.messages
        assert system.role == "system" and "helpful" in system.content and user.role == "user"
        assert request.prefill is None and request.stop == []
    evolve = next(r for r in requests if r.tag.removeprefix("evol_") in OPERATIONS)
    assert evolve.sampling.temperature == 1.0 and evolve.sampling.max_tokens == 2048


def test_small_model_profile_changes_sampling_system_message_prefill_and_elimination_lists():
    paper, small = EvolInstructConfig(source="x"), EvolInstructConfig(source="x", profile="small-model")
    changed = {k for k in EvolInstructConfig.model_fields if getattr(paper, k) != getattr(small, k)}
    assert changed == {
        "profile",
        "evolve_sampling",
        "response_sampling",
        "system_prompt",
        "prefill_evolution",
        "extra_eliminations",
    }
    assert set(EvolInstructConfig.profile_changes("small-model")) == changed - {"profile"}
    assert (small.evolve_sampling.temperature, small.evolve_sampling.max_tokens) == (0.7, 384)
    assert small.response_sampling.max_tokens == 512 and small.system_prompt == ""
    request = make(EvolScript(), profile="small-model").evolve_request("deepen", "Explain tides.", (0, 1, 0))
    assert [m.role for m in request.messages] == ["user"]  # the model's own chat template decides
    assert request.prefill == ANSWER_LABEL[False] and request.stop == SECTION_LABELS
    assert (
        make(EvolScript(), profile="small-model").evolve_request("breadth", "x", (0, 1, 0)).prefill
        == "#Created Prompt#:"
    )


def test_values_given_explicitly_win_over_the_profile():
    config = EvolInstructConfig(
        source="x", profile="small-model", evolve_sampling=SamplingConfig(max_tokens=100), extra_eliminations=False
    )
    assert config.evolve_sampling.max_tokens == 100 and not config.extra_eliminations
    assert config.response_sampling.max_tokens == 512  # still the profile's


def test_every_evolving_prompt_ends_with_the_answer_label_the_code_uses():
    gen = make(EvolScript())
    for op in OPERATIONS:
        prompt = gen.evolve_request(op, "Explain tides.", (0, 1, 0)).messages[-1].content
        assert prompt.endswith("#Given Prompt#:\nExplain tides.\n\n" + ANSWER_LABEL[op == "breadth"])


def test_each_operation_has_its_own_prompt_holding_the_instruction():
    gen = make(EvolScript())
    prompts = {op: gen.evolve_request(op, "Explain tides.", (0, 1, 0)).messages[-1].content for op in OPERATIONS}
    assert len(set(prompts.values())) == len(OPERATIONS)
    assert all("Explain tides." in p for p in prompts.values())
    assert "one further constraint" in prompts["add_constraints"]
    assert "more specific" in prompts["concretize"]
    assert "several steps" in prompts["increase_reasoning"]
    assert "deeper and broader" in prompts["deepen"]
    assert "already has an input" in prompts["complicate_input"] and "rarer" in prompts["breadth"]
    depth = [op for op in OPERATIONS if op != "breadth"]
    assert all("non-text part" in prompts[op] and "keep its input" in prompts[op] for op in depth)
    # The paper's limit on added words, except where a whole input is added.
    assert all("10 to 20 words" in prompts[op] for op in depth if op != "complicate_input")
    # Each prompt names the words a rewrite must not copy (the paper's fourth elimination rule).
    assert all("'given prompt'" in p for p in prompts.values())


def test_complicate_input_applies_to_plain_instructions_too():
    gen = make(EvolScript(), operation_weights={"complicate_input": 1.0})
    rng = random.Random(0)
    assert {gen.choose(rng) for _ in range(20)} == {"complicate_input"}
    result = gen.run_chunk(0, [Example("Write a haiku about the sea.", id="p")])
    [record] = result.kept
    assert record.operation == "complicate_input" and record.parent_id == "p"
    assert record.instruction == "Write a haiku about the sea. Also complicate_input."


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
        ("#Rewritten Prompt#: Explain rainbows in depth.", "leaked rewriting prompt (rewritten prompt)"),
        ("Here is the rewritten prompt: explain rainbows.", "leaked rewriting prompt (rewritten prompt)"),
        ("As in the given prompt, explain rainbows.", "leaked rewriting prompt (given prompt)"),
        ("#Created Prompt#\nExplain auroras.", "leaked rewriting prompt (created prompt)"),
        ("Explain how double rainbows form, with the angles involved.", None),
        # A Markdown heading is text, not a leak.
        ("Explain rainbows.\n\n### Step 1\nName the colours.", None),
        # Our extra words are off on the paper's settings.
        ("New instruction: explain double rainbows.", None),
        ("#Rewritten: explain double rainbows.", None),
    ],
)
def test_paper_leak_empty_and_unchanged_rules(evolved, reason):
    assert leak_reason("Explain how rainbows form.", evolved) == reason


@pytest.mark.parametrize(
    ("evolved", "reason"),
    [
        ("New instruction: explain double rainbows.", "leaked rewriting prompt (new instruction)"),
        ("#Rewritten: explain double rainbows.", "leaked rewriting prompt (#rewritten)"),
        ("Explain rainbows.\n\n### Step 1\nName the colours.", None),
    ],
)
def test_extra_leaked_words_apply_only_when_asked_for(evolved, reason):
    assert leak_reason("Explain how rainbows form.", evolved, extra=True) == reason


@pytest.mark.parametrize(
    ("response", "paper", "extra"),
    [
        ("Sorry, that is not something I can do.", "response is a short refusal", "response is a short refusal"),
        ("SORRY!", "response is a short refusal", "response is a short refusal"),
        ("I cannot help with that request.", None, "response is a short refusal"),
        ("As an AI, I do not have opinions.", None, "response is a short refusal"),
        ("I apologize, but that is beyond me.", None, "response is a short refusal"),
        ("sorry " + "here is the full plan " * 16, None, None),  # 81 words: not short
        ("It is, and so on... yes!", *["response is only punctuation and stop words"] * 2),
        ("", *["response is only punctuation and stop words"] * 2),
        ("Rainbows form when sunlight refracts in raindrops.", None, None),
    ],
)
def test_paper_response_rules_and_the_extra_refusal_phrases(response, paper, extra):
    assert response_failure(response) == paper
    assert response_failure(response, extra=True) == extra


def eliminated(result) -> dict[str, int]:
    return {reason: n for funnel in result.rounds.values() for reason, n in funnel.eliminated.items()}


@pytest.mark.parametrize(
    ("script", "reason"),
    [
        (EvolScript(verdict='{"verdict": "equal"}'), "no information gain (judged equal to its parent)"),
        (EvolScript(verdict="maybe"), "unparseable equality verdict"),
        (EvolScript(response="Sorry, that is beyond what I can do."), "response is a short refusal"),
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


def test_a_refusal_without_sorry_passes_on_the_paper_settings_and_not_with_extra_eliminations():
    script = EvolScript(response="I cannot help with that request.")
    assert len(make(script).run_chunk(0, SOURCE).kept) == len(SOURCE)
    result = make(script, extra_eliminations=True).run_chunk(0, SOURCE)
    assert result.kept == [] and eliminated(result) == {"response is a short refusal": len(SOURCE)}


HEADINGS = "Plan a three-day trip to Lisbon.\n\n### Step 1\nPick the neighbourhoods.\n\n### Step 2\nBook."


def rewrite_then(tail: str):
    """A script whose rewrite holds Markdown headings, followed by `tail`."""

    def script(request: ChatRequest) -> str:
        if request.tag in ("evol_equality", "evol_response"):
            return EvolScript()(request)
        return HEADINGS + tail

    return script


@pytest.mark.parametrize("profile", ["paper", "small-model"])
def test_a_markdown_heading_inside_an_evolved_instruction_survives(profile):
    gen = make(honour_stops(rewrite_then("")), profile=profile, operation_weights={"deepen": 1.0})
    [record] = gen.run_chunk(0, [Example("Plan a trip.", id="t")]).kept
    assert record.instruction == HEADINGS


def test_a_model_that_goes_on_to_write_another_section():
    """small-model stops the reply at the prompt's next label; the paper sets no stop strings, so
    the reply copies a label and is eliminated (its rule 4)."""
    tail = "\n\n#Given Prompt#:\nSomething else."
    small = make(honour_stops(rewrite_then(tail)), profile="small-model", operation_weights={"deepen": 1.0})
    [record] = small.run_chunk(0, [Example("Plan a trip.", id="t")]).kept
    assert record.instruction == HEADINGS
    paper = make(honour_stops(rewrite_then(tail)), operation_weights={"deepen": 1.0})
    result = paper.run_chunk(0, [Example("Plan a trip.", id="t")])
    assert result.kept == [] and eliminated(result) == {"leaked rewriting prompt (given prompt)": 1}


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
            first = request.messages[-1].content.split("First instruction:\n", 1)[1]
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
    # Every evolution succeeds with this script: one record per source and round.
    assert sorted((r.root_id, r.round) for r in result.kept) == [(s.id, n) for s in SOURCE for n in range(1, 5)]
    by_id = {r.id: r for r in result.kept}
    for record in result.kept:
        steps, node = 0, record
        while node.parent_id in by_id:
            node, steps = by_id[node.parent_id], steps + 1
        assert node.parent_id == record.root_id and record.root_id in {"s1", "s2", "s3"}
        assert steps == record.round - 1


def test_include_source_writes_round_zero_and_every_round_links_to_it():
    source = [*SOURCE, Example("Name a prime number.", output="Seven.", id="s4")]
    engine = ScriptedEngine(EvolScript())
    gen = EvolInstructGenerator(EvolInstructConfig(source="x", rounds=3), engine, run_id="evo")
    result = gen.run_chunk(0, source)
    zero = {r.root_id: r for r in result.kept if r.round == 0}
    assert set(zero) == {"s1", "s2", "s3", "s4"}
    # round-0 records have content ids like every record (source ids need not be unique across sources)
    assert all(r.id == content_id(r.instruction, r.input, r.output) for r in zero.values())
    assert all(r.parent_id is None and r.operation == "source" for r in zero.values())
    # Instruction and input are kept apart, as the source has them; the output is the source's
    # where it has one, else the model's response to instruction and input.
    assert (zero["s2"].instruction, zero["s2"].input) == ("Sort the numbers in ascending order.", "5, 3, 9, 1")
    assert zero["s4"].output == "Seven." and zero["s4"].model == "" and zero["s4"].template == ""
    assert zero["s1"].output == "A full answer with real content." and zero["s1"].template == "evol_response"
    # Round 0 is the first engine call: a response for each source without an output.
    answered = engine.calls[0]
    assert [r.tag for r in answered] == ["evol_response"] * 3
    assert answered[1].messages[-1].content == "Sort the numbers in ascending order.\n\n5, 3, 9, 1"
    assert answered[1].sampling.max_tokens == 2048 and answered[1].messages[0].role == "system"
    # Rounds 1..3 evolve every source, each record tracing back to its round-0 record.
    by_id = {r.id: r for r in result.kept}
    assert sorted((r.root_id, r.round) for r in result.kept) == [(s.id, n) for s in source for n in range(4)]
    for record in result.kept:
        if record.round > 0:
            parent = by_id[record.parent_id]
            assert parent.round == record.round - 1 and parent.root_id == record.root_id
            if record.round == 1:
                assert parent is zero[record.root_id]
    assert result.rounds[0].as_dict() == {"in": 4, "evolved": 4, "eliminated": {}}


def test_round_zero_responses_face_the_response_rules_and_engine_errors():
    def script(request: ChatRequest):
        if request.tag == "evol_response" and request.messages[-1].content == "Explain how rainbows form.":
            return Completion(text="", finish_reason="error", error="timeout")
        if request.tag == "evol_response" and request.messages[-1].content == "Give three tips for better sleep.":
            return "Sorry, no."
        return EvolScript()(request)

    result = make(script, include_source=True).run_chunk(0, SOURCE)
    assert [r.root_id for r in result.kept if r.round == 0] == ["s2"]
    assert result.rounds[0].as_dict() == {
        "in": 3,
        "evolved": 1,
        "eliminated": {"engine error": 1, "response is a short refusal": 1},
    }
    rejected = {r.root_id: r for r in result.rejects if r.round == 0}
    assert rejected["s1"].detail == "timeout" and rejected["s3"].output == "Sorry, no."
    # A source whose round-0 answer failed still evolves.
    assert {r.root_id for r in result.kept if r.round == 1} == {"s1", "s2", "s3"}


def test_input_is_folded_into_the_evolved_instruction():
    engine = ScriptedEngine(EvolScript())
    EvolInstructGenerator(EvolInstructConfig(source="x", rounds=1, include_source=False), engine).run_chunk(
        0, SOURCE[1:2]
    )
    [evolve] = engine.calls[0]
    assert original(evolve) == "Sort the numbers in ascending order.\n\n5, 3, 9, 1"
    result = make(EvolScript()).run_chunk(0, SOURCE[1:2])
    [record] = result.kept
    assert "5, 3, 9, 1" in record.instruction and record.input == ""
    assert record.output == "A full answer with real content."
    assert record.generator == "evol_instruct" and record.operation in OPERATIONS and record.round == 1


def test_engine_errors_and_truncated_evolutions_are_eliminated():
    def broken(request: ChatRequest):
        if request.tag.startswith("evol_") and request.tag not in ("evol_equality", "evol_response"):
            if "rainbows" in request.messages[-1].content:
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


def test_equality_requests_ask_for_structured_output_the_parser_reads():
    engine = ScriptedEngine(EvolScript())
    gen = EvolInstructGenerator(EvolInstructConfig(source="x", rounds=1), engine)
    gen.run_chunk(0, SOURCE[:1])
    [judge] = [r for call in engine.calls for r in call if r.tag == "evol_equality"]
    assert judge.json_schema == EQUALITY_SCHEMA
    # Every verdict the schema allows parses, to the right answer.
    verdicts = judge.json_schema["properties"]["verdict"]["enum"]
    assert {v: parse_equality(json.dumps({"verdict": v})) for v in verdicts} == {"equal": True, "not equal": False}
    # Both instructions are in the question: the parent, and its evolution.
    prompt = judge.messages[-1].content
    first, second = prompt.split("First instruction:\n", 1)[1].split("Second instruction:\n", 1)
    assert first.strip() == "Explain how rainbows form."
    assert re.match(r"Explain how rainbows form\. Also \w+\.", second)


def test_every_request_carries_the_reference_system_message_word_for_word():
    engine = ScriptedEngine(EvolScript())
    EvolInstructGenerator(EvolInstructConfig(source="x", rounds=1), engine).run_chunk(0, SOURCE[:1])
    systems = {r.messages[0].content for batch in engine.calls for r in batch}
    assert systems == {"You are a helpful assistant."}


def test_complicate_input_shows_six_worked_examples_one_per_kind_of_input_data():
    gen = make(EvolScript())
    prompt = gen.evolve_request("complicate_input", "Suggest a healthy lunch.", (0, 1, 0)).messages[-1].content
    examples = prompt.split("#Given Prompt#:\n")[1:-1]
    assert len(examples) == 6 and all("#Rewritten Prompt#:\n" in e for e in examples)
    kinds = ["<catalogue>", "SQL tables", "def rotate", "<html>", "find ~", '[{"dish"']
    assert [next(k for k in kinds if k in e) for e in examples] == kinds
    assert prompt.endswith("#Given Prompt#:\nSuggest a healthy lunch.\n\n#Rewritten Prompt#:")
