"""An evaluation killed halfway keeps the benchmark answers it made: the next run reads them back
and makes only the rest, and its score equals an uninterrupted run's."""

from __future__ import annotations

import pytest

from synth.training import ifbench
from synth.training.answering import Answerer
from synth.training.answers import AnswerLog, answered


class Killed(Exception):
    pass


class Plain:
    """A stand-in tokenizer whose chat template is the user turn's text."""

    @staticmethod
    def apply_chat_template(messages, tokenize=False, add_generation_prompt=True):
        return messages[-1]["content"]


def scripted_answers(made: list[str], die_after: int | None = None):
    """A stand-in answering backend (`synth.training.answering.Answers`): answers each prompt with its
    first word, in batches of 3, calling `on_batch` as the real ones do; raises after `die_after`
    batches."""

    def answers(prompts, max_new_tokens, stops=(), on_batch=None):
        out: list[str] = []
        for batch, start in enumerate(range(0, len(prompts), 3)):
            if die_after is not None and batch == die_after:
                raise Killed
            new = [p.split()[0] for p in prompts[start : start + 3]]
            made.extend(prompts[start : start + 3])
            out += new
            if on_batch:
                on_batch(len(out), len(prompts), new)
        return out

    return answers


def test_a_killed_benchmark_run_resumes_from_its_answers_and_scores_the_same(tmp_path):
    whole: list[str] = []
    expected = ifbench.instruction_following(Answerer("m", scripted_answers(whole), Plain(), limit=10), "ifbench")

    log = AnswerLog(tmp_path / "answers" / "m-ifbench.jsonl")
    first: list[str] = []
    with pytest.raises(Killed):
        ifbench.instruction_following(
            Answerer("m", scripted_answers(first, die_after=2), Plain(), limit=10), "ifbench", log=log
        )
    assert len(first) == 6 and len(log.read()) == 6  # two batches landed before the kill
    with open(log.path, "a") as f:
        f.write('{"key": "torn')  # the kill tore the line it was writing

    second: list[str] = []
    lines: list[str] = []
    model = Answerer("m", scripted_answers(second), Plain(), limit=10, progress=lines.append)
    resumed = ifbench.instruction_following(model, "ifbench", log=log)
    assert second == whole[6:]  # only the four not answered before
    assert resumed == expected
    assert any("6 of m's answers read back" in line for line in lines)


def test_answers_for_other_prompts_are_not_taken_for_these(tmp_path):
    log = AnswerLog(tmp_path / "log.jsonl")
    log.append([("a", "answer a"), ("b", "answer b")])
    asked: list[list[str]] = []

    def make(prompts, keep):
        asked.append(list(prompts))
        out = [p.upper() for p in prompts]
        keep(len(out), len(out), out)
        return out

    answers, reused = answered(["b", "c"], ["prompt b", "prompt c"], log, make)
    assert answers == ["answer b", "PROMPT C"] and reused == 1 and asked == [["prompt c"]]
    assert log.read() == {"a": "answer a", "b": "answer b", "c": "PROMPT C"}
    assert answered(["c"], ["prompt c"], None, make)[1] == 0  # no log: everything is made
