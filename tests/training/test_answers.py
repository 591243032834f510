"""An evaluation killed halfway keeps the benchmark answers it made: the next run reads them back
and makes only the rest, and its score equals an uninterrupted run's."""

from __future__ import annotations

import pytest

from synth.training import humaneval, ifbench
from synth.training.answers import AnswerLog, answered


class Killed(Exception):
    pass


def scripted_complete(made: list[str], die_after: int | None = None):
    """A stand-in for `humaneval.complete`: answers each prompt with its first word, in batches of
    3, calling `on_batch` as the real one does; raises after `die_after` batches."""

    def complete(model, tokenizer, prompts, max_new_tokens, batch_size=3, chat=False, ask="", system="", on_batch=None):
        out: list[str] = []
        for batch, start in enumerate(range(0, len(prompts), batch_size)):
            if die_after is not None and batch == die_after:
                raise Killed
            new = [p.split()[0] for p in prompts[start : start + batch_size]]
            made.extend(prompts[start : start + batch_size])
            out += new
            if on_batch:
                on_batch(len(out), len(prompts), new)
        return out

    return complete


def test_a_killed_benchmark_run_resumes_from_its_answers_and_scores_the_same(tmp_path, monkeypatch):
    whole: list[str] = []
    monkeypatch.setattr(humaneval, "complete", scripted_complete(whole))
    expected = ifbench.instruction_following("m", None, None, "ifbench", limit=10)

    log = AnswerLog(tmp_path / "answers" / "m-ifbench.jsonl")
    first: list[str] = []
    monkeypatch.setattr(humaneval, "complete", scripted_complete(first, die_after=2))
    with pytest.raises(Killed):
        ifbench.instruction_following("m", None, None, "ifbench", limit=10, log=log)
    assert len(first) == 6 and len(log.read()) == 6  # two batches landed before the kill
    with open(log.path, "a") as f:
        f.write('{"key": "torn')  # the kill tore the line it was writing

    second: list[str] = []
    monkeypatch.setattr(humaneval, "complete", scripted_complete(second))
    lines: list[str] = []
    resumed = ifbench.instruction_following("m", None, None, "ifbench", limit=10, log=log, progress=lines.append)
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
