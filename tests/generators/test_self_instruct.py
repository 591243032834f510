"""Self-Instruct with a scripted engine: prompts, parsing, every filter, pool growth, determinism."""

from __future__ import annotations

import random
import re

import pytest

from synth.engines import ChatRequest, Completion, ScriptedEngine
from synth.filters.novelty import neighbor_ref
from synth.generators.seeds import load_seed_tasks
from synth.generators.self_instruct import SelfInstructGenerator
from synth.generators.self_instruct_replies import (
    instance_reasons,
    parse_instances,
    parse_is_classification,
    parse_task_list,
)
from synth.schemas import SelfInstructConfig

SEEDS = load_seed_tasks()


def make(responder, **config) -> SelfInstructGenerator:
    return SelfInstructGenerator(SelfInstructConfig(**config), ScriptedEngine(responder), SEEDS, run_id="run1")


def listed_tasks(request: ChatRequest) -> list[str]:
    return re.findall(r"^Task \d+: (.*)$", request.prefill, flags=re.MULTILINE)


# -- prompts -------------------------------------------------------------------------------------


def test_first_prompts_list_eight_seed_tasks_and_continue_from_task_nine(script):
    gen = make(script)
    request = gen.task_request(random.Random(0), batch=0, index=0)
    tasks = listed_tasks(request)
    assert len(tasks) == 8
    assert set(tasks) <= {" ".join(s.instruction.split()) for s in SEEDS}
    assert request.prefill.endswith("Task 9:")
    assert request.stop == ["Task 16:"]  # the paper stops before task 16: at most 7 new tasks
    assert request.sampling.max_tokens == gen.config.task_sampling.max_tokens


def test_prompts_mix_six_seeds_with_two_generated_tasks_once_the_pool_has_some(script):
    gen = make(script)
    machine = [f"Generated task number {i} about topic {i}" for i in range(5)]
    gen.add_to_pool(machine)
    tasks = listed_tasks(gen.task_request(random.Random(1), batch=1, index=0))
    assert len(tasks) == 8
    assert sum(t in machine for t in tasks) == 2


def test_demo_counts_are_configurable(script):
    gen = make(script, num_seed_demos=3, num_machine_demos=1, max_new_tasks_per_prompt=4)
    gen.add_to_pool(["Generated task one about rivers"])
    request = gen.task_request(random.Random(0), 0, 0)
    assert len(listed_tasks(request)) == 4
    assert request.prefill.endswith("Task 5:")
    assert request.stop == ["Task 9:"]


def test_classification_is_asked_the_papers_way_with_a_balanced_example_list(script):
    gen = make(script)
    request = gen.classify_request("Tell whether the review is positive", 0, 0)
    prompt = request.messages[0].content
    assert prompt.rstrip().endswith("Task: Tell whether the review is positive")
    yes, no = prompt.count("Is it classification? Yes"), prompt.count("Is it classification? No")
    assert (yes, no) == (12, 19)  # the reference's list: 31 tasks, 12 of them classification tasks
    assert request.prefill == "Is it classification?"
    assert request.stop == ["\n", "Task"]
    assert (request.sampling.temperature, request.sampling.max_tokens) == (0.0, 3)


def test_small_model_profile_asks_the_inverted_question_with_seed_examples(script):
    gen = make(script, profile="small-model")
    request = gen.classify_request("Tell whether the review is positive", 0, 0)
    prompt = request.messages[0].content
    assert prompt.count("Open-ended: no") >= 1 and prompt.count("Open-ended: yes") >= 1
    assert request.prefill == "Open-ended:"
    assert request.tag == "self_instruct_open_ended"


def test_paper_profile_pins_the_reference_settings():
    c = SelfInstructConfig()
    assert c.profile == "paper" and c.instances_per_task == 5 and c.max_new_tasks_per_prompt == 7
    t = c.task_sampling
    assert (t.temperature, t.top_p, t.presence_penalty, t.frequency_penalty, t.max_tokens) == (0.7, 0.5, 2.0, 0.0, 1024)
    i = c.instance_sampling
    assert (i.temperature, i.presence_penalty, i.max_tokens) == (0.0, 1.5, 350)
    assert (c.num_seed_demos, c.num_machine_demos, c.rouge_threshold, c.min_words, c.max_words) == (6, 2, 0.7, 3, 150)
    assert (c.length_cut, c.classify_question, c.instance_demos, c.extra_non_text_keywords) == (
        "reply", "classification", "template", False,
    )  # fmt: skip
    small = SelfInstructConfig(profile="small-model")
    assert small.instances_per_task == 1 and small.length_cut == "last_task"
    assert SelfInstructConfig(profile="small-model", instances_per_task=3).instances_per_task == 3  # explicit wins


def _demo_tasks(request: ChatRequest) -> list[str]:
    """The worked tasks an instance prompt shows before the task asked about."""
    return request.messages[0].content.split("\n\nTask: ")[1:-1]


def test_instance_prompts_show_the_references_number_of_worked_tasks_and_both_branches(script):
    gen = make(script)
    cls = gen.instance_request("Label the mood", True, 0, 0)
    gen_ = gen.instance_request("Explain gravity", False, 0, 1)
    assert cls.tag == "self_instruct_instances_output_first" and cls.prefill == "Class label:"
    assert gen_.tag == "self_instruct_instances_input_first" and gen_.prefill == "Example 1\n"
    for request in (cls, gen_):
        assert (
            request.messages[0]
            .content.rstrip()
            .endswith("\n\nTask: " + request.messages[0].content.split("Task: ")[-1])
        )
        assert request.stop == ["\nTask:", "Example 6"]
    output_first, input_first = _demo_tasks(cls), _demo_tasks(gen_)
    assert (len(output_first), len(input_first)) == (16, 11)  # the reference's 16 and 11
    # output-first: a label and its input for every label shown; only the label without input
    labels_only = [d for d in output_first if "Input:" not in d]
    assert len(labels_only) >= 2 and all(d.count("Class label:") >= 1 for d in labels_only)
    assert max(d.count("Class label:") for d in output_first) >= 3
    assert not any("Example " in d for d in output_first)  # label blocks, no "Example N" heads
    # input-first: several examples per task, and the output alone for a task without input
    assert max(d.count("Example ") for d in input_first) >= 2
    assert sum(1 for d in input_first if "Input:" not in d and "\nOutput:" in d) >= 3


def test_small_model_instance_prompts_force_an_input_field(script):
    gen = make(script, profile="small-model")
    assert gen.instance_request("Explain gravity", False, 0, 1).prefill.endswith("Input:")


def test_seed_text_with_placeholder_syntax_is_not_expanded(script):
    seeds = [
        *SEEDS[:5],
        SEEDS[5].model_copy(update={"instruction": "Fill in {{instruction}} and {{examples}} literally"}),
    ]
    gen = SelfInstructGenerator(SelfInstructConfig(), ScriptedEngine(script), seeds)
    request = gen.instance_request("Fill in {{examples}} literally please", False, 0, 0)
    assert "Task: Fill in {{examples}} literally please" in request.messages[0].content


# -- parsing -------------------------------------------------------------------------------------


def test_task_list_parsing_handles_numbering_styles_continuations_and_preamble():
    text = (
        "Here are more tasks:\n"
        "Task 9: Name three rivers in Europe.\n"
        "10. Summarize the paragraph\nin one sentence.\n"
        "\n"
        "A stray remark that belongs to no task.\n"
        "**Task 11:** Convert 5 miles to kilometers.\n"
        "12) Give a synonym for happy.\n"
        "Task 13:\n"
    )
    assert parse_task_list(text) == [
        "Name three rivers in Europe.",
        "Summarize the paragraph in one sentence.",
        "Convert 5 miles to kilometers.",
        "Give a synonym for happy.",
    ]


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (" Yes", True),
        ("yes", True),
        (" YES\n", True),
        (" No", False),
        ("Yes.", False),  # the reference compares the whole reply: "Yes." is not "Yes"
        ("YES, it is", False),
        (" not sure", False),
        ("", False),
    ],
)
def test_only_an_exact_yes_makes_a_classification_task_as_in_the_reference(reply, expected):
    assert parse_is_classification(reply) is expected


@pytest.mark.parametrize(
    ("reply", "expected"), [(" no", True), ("No", True), (" yes", False), ("No.", False), ("", False)]
)
def test_the_inverted_question_takes_only_an_exact_no_as_classification(reply, expected):
    assert parse_is_classification(reply, "open-ended") is expected


def test_an_unreadable_verdict_makes_a_generation_task_that_still_gets_instances(script):
    def responder(request: ChatRequest) -> str:
        if request.tag == "self_instruct_classify":
            return " Maybe."
        return script(request)

    result = make(responder, prompts_per_batch=1).run_batch(0)
    assert not [r for r in result.rejects if r.stage == "classification"]
    assert {r.instruction for r in result.kept} == set(result.accepted_tasks)
    assert {r.is_classification for r in result.kept} == {False}
    assert {r.template for r in result.kept} == {"self_instruct_instances_input_first"}


def test_the_task_prompt_is_a_plain_request_and_lists_tasks_without_a_trailing_colon(script):
    gen = make(script)
    gen.add_to_pool(["Summarize the letter below:", "Translate the sentence into French :"])
    request = gen.task_request(random.Random(0), 0, 0)
    assert request.messages[0].content == "Write a series of tasks:"
    listed = listed_tasks(request)
    assert "Summarize the letter below" in listed and "Translate the sentence into French" in listed
    assert not any(t.endswith(":") for t in listed)


def test_input_first_instances_parse_with_empty_inputs_and_stop_at_a_new_task():
    text = "Example 1\nInput: None\nOutput: Paris.\nExample 2\nInput: Italy\nOutput: Rome.\nTask: Another task\nInput: x\nOutput: y"
    assert parse_instances(text, classification=False) == [("", "Paris."), ("Italy", "Rome.")]


def test_reply_without_fields_is_the_output_of_a_task_without_input():
    assert parse_instances("Example 1\nInput: The sky is blue because of scattering.", False) == []
    assert parse_instances("Light scatters off air molecules.", False) == [("", "Light scatters off air molecules.")]


def test_a_class_label_without_an_input_is_an_instance_with_an_empty_input():
    assert parse_instances("Class label: Montreal", classification=True) == [("", "Montreal")]
    text = "Class label: Yes\nClass label: No\nInput: It rained all day."
    assert parse_instances(text, classification=True) == [("", "Yes"), ("It rained all day.", "No")]
    # the first line after the label is the label, the rest the input, whatever its field name
    text = "Class label: Linear\nEquation: y = 2x + 5\nClass label: Quadratic\nEquation: y = x^2"
    assert parse_instances(text, classification=True) == [
        ("Equation: y = 2x + 5", "Linear"),
        ("Equation: y = x^2", "Quadratic"),
    ]


def test_output_first_instances_take_the_label_as_output():
    text = "Example 1\nClass label: Positive\nInput: I loved it.\nExample 2\nClass label: Negative\nInput: Awful."
    assert parse_instances(text, classification=True) == [("I loved it.", "Positive"), ("Awful.", "Negative")]
    assert parse_instances("Positive, probably.", classification=True) == []
    # labels written one after another without "Example N" heads, as the paper's prompts do
    bare = "Class label: Positive\nInput: I loved it.\nClass label: Negative\nInput: Awful."
    assert parse_instances(bare, classification=True) == [("I loved it.", "Positive"), ("Awful.", "Negative")]


def test_instance_filters_name_each_rule():
    pairs = [
        ("a", ""),  # empty output
        ("same", "same"),  # output equals input
        ("Text:", "fine"),  # the input ends with a colon: unfinished
        ("b", "Answer:"),  # the output ends with a colon: unfinished
        ("x", "y"),
        ("x", "y"),  # duplicate
        ("z", "w"),
        ("v", "u"),  # over the limit of 2 kept
    ]
    assert instance_reasons(pairs, limit=2) == [
        "empty output",
        "output equals input",
        "ends with a colon (unfinished)",
        "ends with a colon (unfinished)",
        None,
        "duplicate instance",
        None,
        "over the per-task instance limit",
    ]


def test_one_input_with_conflicting_outputs_drops_every_instance_of_the_task():
    pairs = [("x", "y"), ("q", "one"), ("q", "two"), ("z", "w")]
    assert instance_reasons(pairs, limit=5) == ["conflicting outputs for one input"] * 4


def test_only_valid_instances_count_towards_a_conflict():
    # ("x", "x:") is invalid on its own (unfinished), so it gives "x" no second output
    assert instance_reasons([("x", "y"), ("x", "x:")], limit=5) == [None, "ends with a colon (unfinished)"]
    assert instance_reasons([("x", "y"), ("x", "x")], limit=5) == [None, "output equals input"]


def test_instances_are_compared_exactly_as_the_reference_does():
    # different case is a different text: neither equal to the input nor a repeat
    assert instance_reasons([("same", "Same"), ("q", "a"), ("q ", "a")], limit=5) == [None, None, "duplicate instance"]


def test_a_task_without_input_keeps_its_different_outputs():
    pairs = [("", "Paris is the capital of France."), ("", "Tokyo is the capital of Japan."), ("", "Rome.")]
    assert instance_reasons(pairs, limit=5) == [None, None, None]


def test_five_instances_per_task_are_kept_by_default(script):
    def responder(request: ChatRequest) -> str:
        if request.tag == "self_instruct_instances_input_first":
            return "".join(f"Input: case {k}\nOutput: answer {k}\nExample {k + 2}\n" for k in range(7))
        return script(request)

    result = make(responder, prompts_per_batch=1).run_batch(0)
    per_task: dict[str, int] = {}
    for r in result.kept:
        per_task[r.instruction] = per_task.get(r.instruction, 0) + 1
    open_ended = [t for t in result.accepted_tasks if not t.startswith("Please label")]
    assert open_ended and all(per_task[t] == 5 for t in open_ended)
    assert sum(r.reason == "over the per-task instance limit" for r in result.rejects) == 2 * len(open_ended)


# -- batches -------------------------------------------------------------------------------------


def test_batch_produces_records_with_provenance_and_grows_the_pool(script):
    gen = make(script, prompts_per_batch=2)
    result = gen.run_batch(0)
    assert len(result.accepted_tasks) == 6
    assert list(gen.machine_tasks) == []  # the pool changes only on accept
    gen.add_to_pool(result.accepted_tasks)
    assert list(gen.machine_tasks) == result.accepted_tasks
    assert len(result.kept) == 6
    by_task = {r.instruction: r for r in result.kept}
    labelled = [t for t in result.accepted_tasks if t.startswith("Please label")]
    assert labelled and all(by_task[t].is_classification and by_task[t].output == "positive" for t in labelled)
    record = result.kept[0]
    assert record.generator == "self_instruct"
    assert record.run_id == "run1" and record.batch == 0 and record.model == "scripted"
    assert record.template_hash and record.sampling.seed is not None
    assert record.messages[0].role == "user" and record.messages[1].content == record.output
    assert 0 <= record.novelty_rouge_l <= 0.7

    second = gen.engine.calls
    gen.run_batch(1)
    later_prompts = [listed_tasks(r) for r in gen.engine.calls[len(second) - 3 :][0]]
    assert any(set(p) & set(result.accepted_tasks) for p in later_prompts)


def test_duplicate_tasks_across_prompts_of_one_batch_keep_only_one():
    def responder(request: ChatRequest) -> str:
        if request.tag == "self_instruct_tasks":
            return " Describe the water cycle for a science class.\nTask 10: Explain why leaves change color in autumn."
        if request.tag == "self_instruct_classify":
            return " yes"
        return " None\nOutput: An answer."

    result = make(responder, prompts_per_batch=3).run_batch(0)
    assert len(result.accepted_tasks) == 2
    novelty = [r for r in result.rejects if r.stage == "novelty"]
    assert len(novelty) == 0  # exact repeats collapse before scoring...
    result = make(
        lambda r: responder(r).replace("class.", "class today.") if r.sampling.seed % 2 else responder(r),
        prompts_per_batch=6,
    ).run_batch(0)
    novelty = [r for r in result.rejects if r.stage == "novelty"]
    assert novelty and all(r.novelty_rouge_l > 0.7 and r.reason == "ROUGE-L above 0.7" for r in novelty)
    assert all(r.novelty_neighbors[0] in {neighbor_ref(t) for t in result.accepted_tasks} for r in novelty)


def test_heuristic_failures_are_rejects_with_reasons(script):
    def responder(request: ChatRequest) -> str:
        if request.tag == "self_instruct_tasks":
            return (
                " Draw a picture of a horse in the field.\nTask 10: Write a program that prints primes.\nTask 11: Hi."
            )
        return script(request)

    result = make(responder, prompts_per_batch=1).run_batch(0)
    reasons = sorted(r.reason for r in result.rejects if r.stage == "heuristic")
    assert reasons == ["non-text modality (draw)", "starts with 'write a program'", "too short (<= 3 words)"]
    assert result.kept == []


def _cut_off(script):
    def responder(request: ChatRequest):
        if request.tag == "self_instruct_tasks":
            return Completion(
                text=" Name the planets of the solar system.\nTask 10: Describe how volcanoes form and why they",
                finish_reason="length",
            )
        return script(request)

    return responder


def test_a_task_list_cut_off_at_the_token_limit_is_dropped_whole(script):
    result = make(_cut_off(script), prompts_per_batch=1).run_batch(0)
    assert result.accepted_tasks == []
    cut = [r for r in result.rejects if r.stage == "parse"]
    assert {r.reason for r in cut} == {"cut off at the token limit"} and len(cut) == 2


def test_small_model_profile_drops_only_the_unfinished_last_task(script):
    result = make(_cut_off(script), prompts_per_batch=1, profile="small-model").run_batch(0)
    assert result.accepted_tasks == ["Name the planets of the solar system."]
    [cut] = [r for r in result.rejects if r.stage == "parse"]
    assert cut.reason == "cut off at the token limit"
    assert cut.instruction.startswith("Describe how volcanoes")


def test_records_name_the_in_context_tasks_that_produced_them(script):
    gen = make(script, prompts_per_batch=1)
    gen.add_to_pool(["Generated task about rivers and their deltas"])
    request = gen.task_request(random.Random("0:0"), 0, 0)
    result = gen.run_batch(0)
    assert result.kept
    for record in result.kept:
        assert record.demos == gen.demo_refs(request) and len(record.demos) == 8
    seed_ids = {s.id for s in SEEDS}
    refs = {d.split(": ", 1)[0] for d in result.kept[0].demos}
    assert len(refs & seed_ids) == 7 and len(refs - seed_ids) == 1  # seeds by id, the one generated task by hash


def test_unparseable_and_failed_replies_become_rejects_keeping_the_raw_text(script):
    def responder(request: ChatRequest):
        if request.tag == "self_instruct_tasks":
            if request.sampling.seed % 2:
                return Completion(text="", finish_reason="error", error="boom")
            return "\n\n"  # the model ended its turn without writing task 9
        return script(request)

    result = make(responder, prompts_per_batch=6).run_batch(0)
    stages = {(r.stage, r.reason) for r in result.rejects}
    assert stages <= {("engine", "engine error"), ("parse", "no numbered tasks in reply")}
    assert len(result.rejects) == 6
    assert all(r.raw == "\n\n" for r in result.rejects if r.stage == "parse")
    assert {r.stage for r in result.rejects} == {"engine", "parse"}
    assert all(r.detail == "boom" for r in result.rejects if r.stage == "engine")


def test_a_failed_classification_call_is_a_reject_with_the_engine_error(script):
    def responder(request: ChatRequest):
        if request.tag == "self_instruct_classify":
            return Completion(text="", finish_reason="error", error="context too long")
        return script(request)

    result = make(responder, prompts_per_batch=1).run_batch(0)
    assert result.kept == []
    assert {(r.stage, r.reason, r.detail) for r in result.rejects} == {
        ("classification", "engine error", "context too long")
    }
    assert len(result.rejects) == len(result.accepted_tasks) == 3


def test_instances_failing_filters_are_rejects_tied_to_their_task(script):
    def responder(request: ChatRequest) -> str:
        if request.tag == "self_instruct_instances_input_first":
            return "Input: same text\nOutput: same text"
        return script(request)

    result = make(responder, prompts_per_batch=1).run_batch(0)
    rejected = [r for r in result.rejects if r.stage == "instance"]
    assert rejected and all(r.reason == "output equals input" and r.instruction for r in rejected)


def test_same_seed_and_replies_give_identical_batches_and_another_seed_differs(script):
    from tests.conftest import SelfInstructScript

    def run(seed: int):
        gen = make(SelfInstructScript(), seed=seed, prompts_per_batch=3)
        out = []
        for b in range(3):
            r = gen.run_batch(b)
            gen.add_to_pool(r.accepted_tasks)
            out.append(([x.id for x in r.kept], [x.id for x in r.rejects]))
        prompts = [[q.prefill for q in call] for call in gen.engine.calls]
        return out, prompts

    assert run(5) == run(5)
    assert run(5)[1] != run(6)[1]


def test_a_task_joins_the_pool_on_the_instruction_filters_alone_whatever_its_instances_become():
    """The reference's bootstrap script appends a task to the machine pool right after its ROUGE-L
    check, and a later script writes the instances: a task whose instances all fail still shapes
    the next prompts. It is also why the next batch can be made before this one is curated."""

    def responder(request: ChatRequest) -> str | Completion:
        if request.tag == "self_instruct_tasks":
            return " Describe the water cycle for a science class.\nTask 10: Explain why leaves change color in autumn."
        if request.tag == "self_instruct_classify":
            return " no"
        return Completion(text="", finish_reason="error", error="down")  # every instance call fails

    result = make(responder, prompts_per_batch=1).run_batch(0)
    assert not result.kept
    assert sorted(result.accepted_tasks) == [
        "Describe the water cycle for a science class.",
        "Explain why leaves change color in autumn.",
    ]
    assert {r.stage for r in result.rejects} == {"instance"}
