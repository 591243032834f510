"""Instruction following checked by programs: the scorer against the package's own way of scoring
its shipped sample answers, offline (nothing downloaded), with what it cannot check left out and
named. Both models of an evaluation answering the shipped prompts: tests/training/test_humaneval.py
(one evaluation scores both benchmarks)."""

from __future__ import annotations

import copy
import json

import nltk
import pytest

from synth.training import ifbench
from synth.training.humaneval import BenchmarkScore
from synth.training.ifbench import IFBenchFileError, InstructionScore, read_prompts, scorable, score
from synth.training.scoring import difference


def sample_answers() -> dict[str, str]:
    path = ifbench.shipped_file().with_name("sample_output.jsonl")
    return {row["prompt"]: row["response"] for row in map(json.loads, path.read_text("utf-8").splitlines())}


@pytest.fixture
def no_network(monkeypatch):
    """Any download the checkers attempt is recorded (and fails): there must be none."""
    attempts: list[tuple] = []

    def download(*args, **kwargs):
        attempts.append(args)
        raise AssertionError(f"download attempted: {args}")

    monkeypatch.setattr(nltk, "download", download)
    return attempts


def test_the_shipped_sample_scores_as_the_package_scores_it_and_nothing_is_downloaded(no_network):
    prompts, left = scorable(read_prompts("ifbench"))
    assert len(read_prompts("ifbench")) == 294
    # What cannot be checked offline is named, prompt by prompt.
    assert sum(left.values()) == 294 - len(prompts) and all("needs NLTK" in reason for reason in left)
    answers = sample_answers()
    ours = score("sample", "ifbench", prompts, [answers[p.prompt] for p in prompts], left)

    # The package's own sequence (its evaluation script's): strict, then loose on the same objects.
    with ifbench.offline() as lib:
        inputs = [lib.InputExample(p.key, p.instruction_ids, p.prompt, copy.deepcopy(p.kwargs)) for p in prompts]
        strict = [lib.test_instruction_following_strict(i, answers) for i in inputs]
        loose = [lib.test_instruction_following_loose(i, answers) for i in inputs]
        theirs = {mode: lib.generate_report(outs, mode) for mode, outs in (("strict", strict), ("loose", loose))}
    assert ours.followed == [int(o.follow_all_instructions) for o in strict]
    for mode in ("strict", "loose"):
        assert getattr(ours, f"{mode}_prompt") == pytest.approx(theirs[mode][f"{mode}:prompt-level"], abs=1e-4)
        assert getattr(ours, f"{mode}_instruction") == pytest.approx(
            theirs[mode][f"{mode}:instruction-level"], abs=1e-4
        )
    assert 0 < ours.strict_prompt <= ours.loose_prompt < 1
    assert no_network == [] and nltk.download.__name__ == "download"  # restored: the test's own


def test_the_word_tokenizer_stand_in_splits_a_sentence_as_nltk_does():
    for sentence in [
        "Don't split the U.S. economy's $4.5 trillion, okay?",
        '"Quoted," she said (twice) -- and left!',
        "Commas, semicolons; colons: all of them.",
    ]:
        assert ifbench._sentence_words(sentence, preserve_line=True) == nltk.word_tokenize(sentence, preserve_line=True)
    words = ifbench._sentence_words("First one. Second one here.")
    assert words == ["First", "one", ".", "Second", "one", "here", "."]


def test_an_ifeval_file_is_read_with_its_errors_named_and_ids_without_a_checker_left_out(tmp_path):
    good = {
        "key": 1,
        "prompt": "Write two words.",
        "instruction_id_list": ["count:word_count_range"],
        "kwargs": [{"min_words": 1, "max_words": 3}],
    }
    foreign = {**good, "key": 2, "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}
    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps(good) + "\n\n" + json.dumps(foreign) + "\n")
    prompts = read_prompts(path)
    assert [p.key for p in prompts] == ["1", "2"]
    kept, left = scorable(prompts)
    assert [p.key for p in kept] == ["1"] and left == {"no checker for punctuation:no_comma": 1}
    result = score("m", "ifeval:mine.jsonl", kept, ["two words"], left)
    assert result.strict_prompt == 1.0 and result.followed == [1]
    assert score("m", "x", kept, ["far too many words in this one"], left).followed == [0]

    for text, message in [
        ("{not json\n", "mine.jsonl:1: not JSON"),
        (json.dumps({**good, "kwargs": [{}, {}]}) + "\n", "mine.jsonl:1: kwargs must be a list of one object"),
        (json.dumps({**good, "prompt": ""}) + "\n", "mine.jsonl:1: no prompt"),
        (
            json.dumps(good) + "\n" + json.dumps({**good, "instruction_id_list": []}) + "\n",
            "mine.jsonl:2: instruction_id_list",
        ),
        ("", "holds no prompts"),
        (json.dumps({**good, "prompt": "a\x1b[31m red"}) + "\n", "mine.jsonl:1: control character"),
    ]:
        path.write_text(text)
        with pytest.raises(IFBenchFileError, match=message):
            read_prompts(path)


def test_the_difference_interval_resamples_prompts_for_both_models_alike():
    def made(followed: list[int]) -> InstructionScore:
        share = sum(followed) / len(followed)
        shares = dict.fromkeys(("strict_prompt", "strict_instruction", "loose_prompt", "loose_instruction"), share)
        return InstructionScore(
            model="m", benchmark="b", prompts=len(followed), instructions=len(followed), followed=followed, **shares
        )

    same = difference(made([1, 0] * 20), made([1, 0] * 20), seed=0)
    assert same is not None and same.difference == same.low == same.high == 0.0
    better = difference(made([0] * 40), made([1] * 30 + [0] * 10), seed=0)
    assert better is not None and better.metric == "strict prompt-level accuracy"
    assert better.difference == pytest.approx(0.75) and 0.5 < better.low <= 0.75 <= better.high <= 1.0
    assert better == difference(made([0] * 40), made([1] * 30 + [0] * 10), seed=0)  # seeded
    # Two fine-tuning seeds: each prompt counts the share of seeds that followed it.
    seeds = difference(made([0] * 40), [made([1] * 30 + [0] * 10), made([1] * 10 + [0] * 30)], seed=0)
    assert seeds is not None and seeds.difference == pytest.approx(0.5) and seeds.seed_values == [0.75, 0.25]


def test_humaneval_differences_resample_the_problems_and_old_results_have_none():
    def made(passed: list[bool]) -> BenchmarkScore:
        return BenchmarkScore(
            model="m", problems=len(passed), passed=sum(passed), pass_at_1=sum(passed) / len(passed), failures={},
            passed_each=passed,
        )  # fmt: skip

    change = difference(made([False] * 20), made([True] * 5 + [False] * 15), seed=0)
    assert change is not None and change.metric == "pass@1" and change.difference == pytest.approx(0.25)
    assert change.low <= 0.25 <= change.high
    old = BenchmarkScore(model="m", problems=2, passed=1, pass_at_1=0.5, failures={"error": 1})
    assert difference(old, old, seed=0) is None  # stored before per-problem results were kept
