"""Benchmark answers through vLLM: the same text, decoding and stops as the engine's own chat, in
chunks that are kept as they are made."""

from __future__ import annotations

import pytest

from synth.engines import ChatRequest
from synth.sandbox import Sandbox
from synth.schemas import Message, Sampling
from synth.training.answering import VLLMAnswers, answer_dtype
from synth.training.answers import AnswerLog
from synth.training.humaneval import SANDBOX, STOPS, pass_at_1, render
from synth.training.ifbench import read_prompts, scorable
from synth.training.model import load_tokenizer, resolve_base

pytestmark = pytest.mark.engine  # the embedded model in vLLM (the session's engine)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(resolve_base(None).path)


def test_answers_are_the_engines_own_greedy_replies_to_the_same_chat(vllm_engine, tokenizer):
    prompts = [p.prompt for p in scorable(read_prompts("ifbench"))[0][:3]]
    batches: list[tuple[int, int, int]] = []
    answers = VLLMAnswers(vllm_engine, chunk=2)
    rendered = render(tokenizer, prompts, chat=True, ask="{prompt}")
    got = answers(rendered, 24, (), lambda done, total, new: batches.append((done, total, len(new))))
    greedy = Sampling(temperature=0.0, top_p=1.0, max_tokens=24)
    direct = vllm_engine.chat(
        [ChatRequest(messages=[Message(role="user", content=p)], sampling=greedy) for p in prompts]
    )
    assert got == [c.text for c in direct] and all(got)
    assert batches == [(2, 3, 2), (3, 3, 1)]  # each chunk handed on as it is made
    assert answer_dtype(answers) in ("bfloat16", "float16", "float32")


def test_humaneval_completions_end_before_the_next_top_level_block(vllm_engine, tokenizer, tmp_path):
    log = AnswerLog(tmp_path / "humaneval.jsonl")
    score = pass_at_1(
        "base", VLLMAnswers(vllm_engine), tokenizer, Sandbox(SANDBOX), limit=3, max_new_tokens=96, log=log
    )
    completions = list(log.read().values())
    assert score.problems == 3 and len(completions) == 3 and any(completions)
    assert score.passed + sum(score.failures.values()) == 3
    assert not [c for c in completions if any(stop in c for stop in STOPS)]
