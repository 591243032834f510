"""Magpie: user messages sampled from the opening of a user turn of the model's chat template,
answered as chat turns; one and several turns; every failure a reject with its reason."""

from __future__ import annotations

import pytest

from synth.engines import ChatRequest, Completion, ScriptedEngine
from synth.engines.base import ChatTemplate
from synth.generators.magpie import QUERY, RESPONSE, MagpieError, MagpieGenerator
from synth.schemas import Message
from synth.schemas.magpie import MagpieConfig


class ChatML:
    """A tokenizer stand-in with a ChatML chat template (SmolLM2's shape)."""

    def apply_chat_template(self, turns, tokenize=False, add_generation_prompt=False):
        text = "".join(f"<|im_start|>{t['role']}\n{t['content']}<|im_end|>\n" for t in turns)
        return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")


TEMPLATE = ChatTemplate(ChatML())


def test_the_chat_template_opens_a_user_turn_and_names_its_end():
    assert TEMPLATE.pre_query() == "<|im_start|>user\n"
    history = [Message(role="user", content="Hi"), Message(role="assistant", content="Hello!")]
    assert TEMPLATE.pre_query(history) == (
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\n"
    )
    assert TEMPLATE.end_of_turn() == "<|im_end|>"


class Script:
    """User messages and answers by request kind; `queries` is consumed in order."""

    def __init__(self, queries):
        self.queries = list(queries)
        self.requests: list[ChatRequest] = []

    def __call__(self, request: ChatRequest):
        self.requests.append(request)
        if request.tag == QUERY:
            reply = self.queries.pop(0)
            return reply if isinstance(reply, Completion) else " " + reply
        assert request.tag == RESPONSE and request.raw is None
        return f"Answer to: {request.messages[-1].content}"


def make(script, **config):
    return MagpieGenerator(MagpieConfig(**config), ScriptedEngine(script, template=TEMPLATE), run_id="m")


def test_one_turn_samples_a_user_message_from_the_bare_template_and_answers_it():
    script = Script(["How do tides work on the coast?", "Name three rivers in Africa please."])
    result = make(script).run_batch(0, 2)
    assert [(r.instruction, r.output) for r in result.kept] == [
        ("How do tides work on the coast?", "Answer to: How do tides work on the coast?"),
        ("Name three rivers in Africa please.", "Answer to: Name three rivers in Africa please."),
    ]
    queries = [r for r in script.requests if r.tag == QUERY]
    assert {q.raw for q in queries} == {"<|im_start|>user\n"} and not queries[0].messages
    # The paper's sampling: temperature 1 and top-p 1 for the user message, stopped at the end of
    # the line or of the turn; greedy answers; a distinct, reproducible seed per request.
    assert queries[0].stop == ["\n", "<|im_end|>"] and queries[0].sampling.temperature == 1.0
    assert queries[0].sampling.seed != queries[1].sampling.seed
    answers = [r for r in script.requests if r.tag == RESPONSE]
    assert answers[0].sampling.temperature == 0.0 and answers[0].sampling.max_tokens == 2048
    record = result.kept[0]
    assert record.generator == "magpie" and [m.role for m in record.messages] == ["user", "assistant"]
    again = Script(["How do tides work on the coast?", "Name three rivers in Africa please."])
    make(again).run_batch(0, 2)
    assert [r.sampling.seed for r in again.requests] == [r.sampling.seed for r in script.requests]


def test_several_turns_continue_the_conversation_and_a_system_prompt_steers_it():
    script = Script(["What is a prime number exactly?", "Is 91 a prime number then?"])
    result = make(script, turns=2, system_prompt="You help with maths.").run_batch(0, 1)
    [record] = result.kept
    assert [m.role for m in record.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert record.instruction == "What is a prime number exactly?" and "multi-turn" in record.tags
    second = [r for r in script.requests if r.tag == QUERY][1]
    assert second.raw.startswith("<|im_start|>system\nYou help with maths.<|im_end|>\n")
    assert second.raw.endswith("Answer to: What is a prime number exactly?<|im_end|>\n<|im_start|>user\n")


def test_unusable_user_messages_are_rejects_with_their_reason_and_raw_text():
    script = Script(
        [
            "",
            "Hi",
            Completion(text=" Write a very long", finish_reason="length"),
            Completion(text="", finish_reason="error", error="boom"),
            "Explain how rainbows form after rain.",
        ]
    )
    result = make(script).run_batch(3, 5)
    assert [r.instruction for r in result.kept] == ["Explain how rainbows form after rain."]
    assert [(r.stage, r.reason) for r in result.rejects] == [
        ("parse", "empty user message"),
        ("parse", "user message under 3 words"),
        ("parse", "user message cut off at the token limit"),
        ("engine", "engine error"),
    ]
    assert result.rejects[2].raw == " Write a very long" and result.rejects[3].detail == "boom"
    assert all(r.batch == 3 and r.phase == "generation" for r in result.rejects)


def test_without_a_chat_template_magpie_needs_a_template_string_and_one_turn():
    with pytest.raises(MagpieError, match="needs the model's chat template"):
        MagpieGenerator(MagpieConfig(), ScriptedEngine(), run_id="m")
    script = Script(["Describe a quiet morning by the lake."])
    gen = MagpieGenerator(MagpieConfig(template="USER: "), ScriptedEngine(script), run_id="m")
    assert len(gen.run_batch(0, 1).kept) == 1 and script.requests[0].raw == "USER: "
    assert script.requests[0].stop == ["\n"]
    with pytest.raises(MagpieError, match="several turns"):
        MagpieGenerator(MagpieConfig(template="USER: ", turns=2), ScriptedEngine(), run_id="m")


def test_turns_are_budgeted_to_fit_the_models_context_and_the_run_says_so():
    script = Script(["What is a prime number, exactly?", "And how many are there below ten?"])
    engine = ScriptedEngine(script, template=TEMPLATE, max_model_len=2048)
    gen = MagpieGenerator(MagpieConfig(turns=2), engine, run_id="m")
    budget = gen.budget
    # The paper's limits (512 + 2048 a turn) need 5,120 tokens for two turns: scaled to fit 2,048.
    assert budget.scaled and budget.context == 2048
    overhead = 16 * (2 * 2 + 1)
    assert 2 * (budget.query_tokens + budget.response_tokens) <= 2048 - overhead
    assert budget.query_tokens / budget.response_tokens == pytest.approx(512 / 2048, rel=0.02)
    assert "scaled to fit the model's context of 2048 tokens" in budget.describe()
    gen.run_batch(0, 1)
    sent = [(r.tag, r.sampling.max_tokens) for r in script.requests]
    assert sent == [(QUERY, budget.query_tokens), (RESPONSE, budget.response_tokens)] * 2


def test_the_papers_limits_stay_where_they_fit_or_the_context_is_unknown():
    roomy = MagpieGenerator(MagpieConfig(turns=2), ScriptedEngine(Script([]), template=TEMPLATE, max_model_len=32768))
    assert (roomy.budget.query_tokens, roomy.budget.response_tokens, roomy.budget.scaled) == (512, 2048, False)
    unknown = MagpieGenerator(MagpieConfig(turns=3), ScriptedEngine(Script([]), template=TEMPLATE))
    assert (unknown.budget.query_tokens, unknown.budget.response_tokens, unknown.budget.scaled) == (512, 2048, False)
    assert unknown.budget.describe() == ""


def test_a_conversation_that_cannot_go_on_keeps_its_completed_turns():
    too_long = Completion(text="", finish_reason="error", error="maximum context length is 2048 tokens")

    def script(request: ChatRequest):
        turn = sum(m.role == "user" for m in (request.messages or []))
        if request.tag == QUERY:
            return " Tell me about the moon and its phases." if "<|im_start|>assistant" not in request.raw else " Why?"
        if turn == 2:
            return too_long
        return "The moon reflects sunlight."

    result = make(script, turns=3).run_batch(0, 1)
    [record] = result.kept
    assert [m.role for m in record.messages] == ["user", "assistant"]
    assert "fewer-turns" in record.tags and result.rejects == []
