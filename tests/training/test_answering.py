"""Benchmark answers through vLLM: the same text, decoding and stops as the engine's own chat, in
chunks that are kept as they are made."""

from __future__ import annotations

import pytest

from synth.engines import ChatRequest
from synth.sandbox import Sandbox
from synth.schemas import Message, Sampling
from synth.training.answering import Answerer, VLLMAnswers, answer_dtype
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
    # In the same batches as the answers' chunks: on some CPUs a prompt's greedy reply depends on the
    # batch it is decoded in.
    direct = [
        completion
        for chunk in (prompts[:2], prompts[2:])
        for completion in vllm_engine.chat(
            [ChatRequest(messages=[Message(role="user", content=p)], sampling=greedy) for p in chunk]
        )
    ]
    assert got == [c.text for c in direct] and all(got)
    assert batches == [(2, 3, 2), (3, 3, 1)]  # each chunk handed on as it is made
    assert answer_dtype(answers) in ("bfloat16", "float16", "float32")


def test_humaneval_completions_end_before_the_next_top_level_block(vllm_engine, tokenizer, tmp_path):
    log = AnswerLog(tmp_path / "humaneval.jsonl")
    model = Answerer("base", VLLMAnswers(vllm_engine), tokenizer, limit=3, max_new_tokens=96)
    score = pass_at_1(model, Sandbox(SANDBOX), log=log)
    completions = list(log.read().values())
    assert score.problems == 3 and len(completions) == 3 and any(completions)
    assert score.passed + sum(score.failures.values()) == 3
    assert not [c for c in completions if any(stop in c for stop in STOPS)]


def test_answer_engines_run_in_this_process_one_at_a_time_and_closing_one_spares_the_other(tokenizer):
    """Engine cores in one process share vLLM's parallel state, and closing one tore it down under
    the other ("pipeline model parallel group is not initialized"): the second gets a process."""
    import psutil

    from synth.training.answering import vllm_answers

    path = resolve_base(None).path
    prompt = render(tokenizer, ["Name a colour."], chat=True)
    with vllm_answers(path) as first:
        engine = first.engine
        assert engine.in_process and engine._processes == [] and engine._watcher is None
        with vllm_answers(path, answer_dtype(first)) as second:
            assert not second.engine.in_process and second.engine._processes
            assert second(prompt, 8)[0]
            beside = second.engine._processes
        assert not [p for p in beside if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert first(prompt, 8)[0]  # the first still serves
    assert engine._llm is None  # closed with its block
