"""HumanEval pass@1: the scorer checked against the benchmark's own solutions, and both models of an
evaluation scored through the real embedded model and the sandbox."""

from __future__ import annotations

from collections import Counter

import pytest

from synth.sandbox import Sandbox
from synth.training.humaneval import SANDBOX, BenchmarkScore, chat_program, problems, program, truncate
from synth.training.ifbench import InstructionScore, read_prompts, scorable


def test_every_canonical_solution_passes_and_a_wrong_body_fails_every_problem():
    every = problems()
    assert len(every) == 164 and every[0].task_id == "HumanEval/0"
    box = Sandbox(SANDBOX)
    right = list(box.run_many(program(p, p.solution) for p in every))
    assert [p.task_id for p, r in zip(every, right, strict=True) if not r.passed] == []
    wrong = list(box.run_many(program(p, "    return None\n") for p in every))
    assert not any(r.passed for r in wrong)
    assert Counter(r.kind for r in wrong).keys() <= {"assertion", "exception"}


def test_a_chat_reply_is_scored_by_its_code_block_that_defines_the_entry_point():
    every = problems()
    box = Sandbox(SANDBOX)
    replies = [f"Here it is:\n\n```python\n{p.prompt}{p.solution}```\n\nIt works." for p in every]
    runs = list(box.run_many(chat_program(p, r) for p, r in zip(every, replies, strict=True)))
    assert [p.task_id for p, r in zip(every, runs, strict=True) if not r.passed] == []
    first = every[0]
    helper_first = f"```python\nimport math\n```\n```python\n{first.prompt}{first.solution}```"
    assert box.run(chat_program(first, helper_first)).passed  # the block that defines the entry point
    prose = box.run(chat_program(first, "I cannot do that."))
    assert prose.kind == "exception" and "SyntaxError" in prose.error()


def test_a_completion_is_cut_where_a_new_top_level_block_starts():
    body = "    return a + b\n"
    assert truncate(body + "\ndef another():\n    pass\n") == body
    assert truncate(body + "\nif __name__ == '__main__':\n    print(1)\n") == body
    assert truncate(body + "\n# a comment at the top level\n") == body
    assert truncate("    # an indented comment stays\n" + body) == "    # an indented comment stays\n" + body


@pytest.mark.engine  # loads the embedded model's weights
@pytest.mark.usefixtures("prefect_harness")
def test_an_evaluation_without_reference_pairs_scores_humaneval_and_ifbench_for_both_models(small_dataset):
    """Through the command line, benchmarks only: no --reference, so no loss."""
    from typer.testing import CliRunner

    from synth.cli import app
    from synth.training.evaluate import read_evaluation

    args = ["--max-steps", "1", "--batch-size", "2", "--max-length", "128", "--threads", "1", "--limit", "2"]
    benchmarks = ["--benchmark", "humaneval", "--benchmark", "ifbench", "--benchmark-max-tokens", "48"]
    import multiprocessing

    before = set(multiprocessing.active_children())
    result = CliRunner().invoke(app, ["evaluate", str(small_dataset), *args, *benchmarks])
    assert result.exit_code == 0, result.output
    # Both models answered in vLLM, in one precision, and each engine was closed after its answers.
    assert set(multiprocessing.active_children()) <= before
    assert "no reference pairs, so no loss" in result.output and "ifbench: instruction following" in result.output
    evaluation = read_evaluation(small_dataset)
    assert evaluation is not None and evaluation.reference_pairs == 0 and evaluation.base.loss is None
    assert evaluation.answered_with in ("vllm (bfloat16)", "vllm (float16)", "vllm (float32)")
    scores = evaluation.benchmarks["humaneval"]
    for which in ("base", "tuned"):
        score = scores[which]
        assert isinstance(score, BenchmarkScore)
        assert score.problems == 2 and 0 <= score.passed <= 2
        assert score.pass_at_1 == pytest.approx(score.passed / 2)
        assert sum(score.failures.values()) == 2 - score.passed
    card = (small_dataset / "README.md").read_text()
    assert "humaneval pass@1 (greedy, 2 problems" in card and "no reference pairs, so no loss" in card
    code = evaluation.differences["humaneval"]  # pass@1, tuned minus base, over the two problems
    assert code.metric == "pass@1" and code.low <= code.difference <= code.high
    assert code.difference == pytest.approx((scores["tuned"].passed - scores["base"].passed) / 2)
    assert f"Tuned minus base, pass@1: {code.difference:+.3f}" in card
    # Instruction following: the first 2 prompts IFBench can check here, answered by both models.
    following = evaluation.benchmarks["ifbench"]
    base, tuned = following["base"], following["tuned"]
    assert isinstance(base, InstructionScore) and isinstance(tuned, InstructionScore)
    assert base.prompts == tuned.prompts == 2 and len(base.followed) == len(tuned.followed) == 2
    assert base.strict_prompt == pytest.approx(sum(base.followed) / 2) and base.strict_prompt <= base.loose_prompt
    assert base.left_out == tuned.left_out and sum(base.left_out.values()) == 294 - len(
        scorable(read_prompts("ifbench"))[0]
    )
    diff = evaluation.differences["ifbench"]
    assert diff.low <= diff.difference <= diff.high
    assert diff.difference == pytest.approx((sum(tuned.followed) - sum(base.followed)) / 2)
    assert "ifbench instruction following (greedy, 2 prompts" in card and "strict prompt" in card
    assert not (small_dataset / "evaluation-answers").exists()  # kept only while the evaluation runs
