"""SelfCodeAlign with a scripted model and the real sandbox: the three steps, one passing answer kept
per task, every other answer a reject with its stage and kind."""

from __future__ import annotations

import textwrap
from collections import Counter

import pytest

from synth.engines import ChatRequest
from synth.engines.scripted import ScriptedEngine
from synth.generators.code_seeds import CodeSeedError, Snippet, scan_code, usable_seeds
from synth.generators.self_code_align import (
    CONCEPTS,
    RESPONSE,
    TASK,
    Answer,
    SelfCodeAlignGenerator,
    demonstrations,
    parse_answer,
)
from synth.sandbox import Sandbox
from synth.schemas.code import SandboxConfig, SelfCodeAlignConfig

SANDBOX = Sandbox(SandboxConfig(timeout_s=4, cpu_s=2, workers=2))


def answer(solution: str, tests: str, reasoning: str = "Add the two numbers.") -> str:
    """A response-step reply as a model continues the prompt after `<response>`."""
    return f"{reasoning}\n\n```python\n{solution}\n```\n</response>\n\n<tests>\n```python\n{tests}\n```\n"


GOOD = answer("def add(a, b):\n    return a + b", "assert add(2, 3) == 5")
GOOD_TOO = answer("def add(a, b):\n    return sum((a, b))", "assert add(1, 1) == 2", "Sum a pair.")
WRONG = answer("def add(a, b):\n    return a - b", "assert add(2, 3) == 5")
CRASH = answer("def add(a, b):\n    return a + undefined_name", "assert add(2, 3) == 5")
SPINS = answer("def add(a, b):\n    while True:\n        pass", "assert add(2, 3) == 5")
NO_TESTS = "Just add them.\n\n```python\ndef add(a, b):\n    return a + b\n```\n</response>\n"
ANSWERS = [GOOD, WRONG, CRASH, GOOD_TOO, SPINS, NO_TESTS]


def scripted(answers: list[str]) -> ScriptedEngine:
    """Concepts and tasks in the expected form; the response step's samples answered from `answers`
    in turn (by the sample's place among the task's samples, taken from the request order)."""
    count = Counter()

    def reply(request: ChatRequest) -> str:
        if request.tag == CONCEPTS:
            return " list slicing, arithmetic\n"
        if request.tag == TASK:
            return "Write `add(a, b)` that returns the sum of two integers.\n\n"
        assert request.tag == RESPONSE and request.raw is not None
        assert request.stop == ["</tests>"] and request.raw.endswith("<response>")
        place = count[request.raw]
        count[request.raw] += 1
        return answers[place % len(answers)]

    return ScriptedEngine(responder=reply)


def seeds(n: int) -> list[Snippet]:
    return [
        Snippet(f'def f{i}(x):\n    """Return x plus {i}."""\n    return x + {i}', "m.py", 3 * i + 1, 3 * i + 3)
        for i in range(n)
    ]


def generator(config: SelfCodeAlignConfig, engine: ScriptedEngine) -> SelfCodeAlignGenerator:
    return SelfCodeAlignGenerator(config, engine, run_id="run", sandbox=SANDBOX)


def test_parse_answer_takes_solution_and_tests_and_says_what_is_missing():
    parsed = parse_answer(GOOD + "</tests>")
    assert isinstance(parsed, Answer)
    assert parsed.solution == "def add(a, b):\n    return a + b" and parsed.tests == "assert add(2, 3) == 5"
    assert parsed.response.startswith("Add the two numbers.") and "</response>" not in parsed.response
    assert parse_answer("text without an end") == "no </response>"
    assert parse_answer(NO_TESTS) == "no <tests> after the response"
    assert parse_answer(answer("x = 1", "print(x)")) == "the tests assert nothing"
    assert parse_answer(answer("def f():\n    # TODO: write it\n    return 1", "assert f() == 1")).startswith(
        "placeholder text"
    )


def test_each_task_keeps_one_passing_answer_and_every_other_answer_is_a_reject_with_its_kind():
    config = SelfCodeAlignConfig(samples=6, shots=2, humaneval=False)
    out = generator(config, scripted(ANSWERS)).run_batch(0, seeds(2))
    assert len(out.kept) == 2  # one per task
    for record in out.kept:
        assert record.code.execution == "passed" and record.code.tests in {
            "assert add(2, 3) == 5",
            "assert add(1, 1) == 2",
        }
        assert record.instruction == "Write `add(a, b)` that returns the sum of two integers."
        assert "```python" in record.output and "<tests>" not in record.output
        assert record.source_doc == "m.py" and record.tags[0] == "self-code-align"
        assert (
            any(t.startswith("category:") for t in record.tags) and "concepts:list slicing, arithmetic" in record.tags
        )
        assert len(record.demos) == 2 + 2 + 1  # the concepts step's, the task step's, the response step's
    kinds = Counter((r.stage, r.reason) for r in out.rejects)
    assert kinds == {
        ("execution", "assertion"): 2,
        ("execution", "exception"): 2,
        ("execution", "timeout"): 2,
        ("dedup", "another passing answer to the same task was kept"): 2,
        ("parse", "no <tests> after the response"): 2,
    }
    crash = next(r for r in out.rejects if r.reason == "exception")
    assert "NameError: name 'undefined_name' is not defined" in crash.detail and crash.code.execution == "exception"
    assert crash.code.tests == "assert add(2, 3) == 5" and crash.instruction.startswith("Write `add")


def test_the_kept_answer_is_drawn_by_the_run_seed_and_the_same_on_a_rerun():
    config = SelfCodeAlignConfig(samples=6, shots=2, humaneval=False)
    first = generator(config, scripted(ANSWERS)).run_batch(0, seeds(3))
    again = generator(config, scripted(ANSWERS)).run_batch(0, seeds(3))
    assert [r.output for r in first.kept] == [r.output for r in again.kept]
    assert [r.id for r in first.kept] == [r.id for r in again.kept]


def test_a_seed_holding_a_humaneval_docstring_is_dropped_before_any_model_call():
    from synth.filters.code_benchmarks import humaneval_problems

    problem = humaneval_problems()[0]
    leaked = Snippet(problem.prompt + problem.solution, "leak.py", 1, 20)
    engine = scripted(ANSWERS)
    out = generator(SelfCodeAlignConfig(samples=1, shots=1), engine).run_batch(0, [leaked])
    assert out.kept == [] and [(r.stage, r.reason) for r in out.rejects] == [
        ("decontamination", "seed holds benchmark text")
    ]
    assert engine.calls == []


def test_demonstrations_are_dropped_until_the_reply_fits_the_models_context():
    engine = scripted([GOOD])
    engine.max_model_len = 900
    out = generator(SelfCodeAlignConfig(samples=1, shots=8, humaneval=False), engine).run_batch(0, seeds(1))
    concepts_prompt = next(r for batch in engine.calls for r in batch if r.tag == CONCEPTS)
    shown = concepts_prompt.raw.count("## Example") - 1  # the last heading opens the seed's own example
    assert 0 < shown < 8
    assert len(concepts_prompt.raw) // 3 + min(1536, 512) <= 900
    assert concepts_prompt.sampling.max_tokens <= 900 - len(concepts_prompt.raw) // 3
    assert len(out.kept) == 1


def test_a_long_task_and_an_empty_concepts_reply_are_rejects_not_silence():
    def reply(request: ChatRequest) -> str:
        if request.tag == CONCEPTS:
            return "\n\n" if "f0" in request.raw else "loops"
        return "word " * 300 if request.tag == TASK else GOOD

    out = generator(
        SelfCodeAlignConfig(samples=1, shots=1, humaneval=False), ScriptedEngine(responder=reply)
    ).run_batch(0, seeds(2))
    assert out.kept == []
    assert sorted((r.stage, r.reason) for r in out.rejects) == [
        ("heuristic", "task over 200 words"),
        ("parse", "no concepts in the reply"),
    ]


def test_every_demonstration_passes_its_own_tests_in_the_sandbox():
    pool = demonstrations()
    assert len(pool) >= 8  # the paper's shot count can be drawn
    runs = list(SANDBOX.run_many(f"{d.code}\n\n\n{d.tests}\n" for d in pool))
    assert [(d.id, r.kind) for d, r in zip(pool, runs, strict=True)] == [(d.id, "passed") for d in pool]


def test_seeds_are_documented_top_level_functions_that_return_a_value(tmp_path):
    (tmp_path / "lib.py").write_text(
        textwrap.dedent('''
            import os

            def kept(a, b=1):
                """Add two numbers."""
                return a + b

            def no_doc(a):
                return a

            def no_args():
                """Nothing in."""
                return 1

            def no_return(a):
                """Prints only."""
                print(a)

            def stub(a):
                """Later."""
                raise NotImplementedError

            def machine(a):
                """Touches the host."""
                return os.path.join(a, "x")

            def buggy(a):
                """Has a bug marker."""
                return a  # TODO

            class Shape:
                """A shape."""

                def area(self):
                    """Its area."""
                    return 0

            class Later:
                """To be written."""

                pass
        ''')
    )
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "helpers.py").write_text('def helper(a):\n    """Help."""\n    return a\n')
    (tmp_path / "broken.py").write_text("def oops(:\n")
    scan = scan_code([tmp_path])
    assert [s.text.splitlines()[0] for s in scan.snippets] == ["def kept(a, b=1):"]
    assert scan.snippets[0].start == 4 and scan.snippets[0].end == 6 and scan.skipped_files == 1
    assert scan.dropped == {
        "no docstring": 1,
        "no arguments": 1,
        "returns no value": 2,  # a stub that only raises among them
        "uses a system module": 1,
        "todo, fixme or bug": 1,
    }
    with_classes = scan_code([tmp_path], classes=True)
    assert [s.kind for s in with_classes.snippets] == ["function", "class"]
    assert with_classes.dropped["a stub"] == 1


def test_a_seed_file_that_is_not_python_names_its_line_and_an_empty_corpus_says_what_it_found(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("x = 1\ndef oops(:\n")
    with pytest.raises(CodeSeedError, match=r"bad\.py:2: not valid Python"):
        usable_seeds(str(bad))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.py").write_text("def f(x):\n    return x\n")
    with pytest.raises(CodeSeedError, match=r"no usable seed function in 1 Python files .*1 no docstring"):
        usable_seeds(str(empty))


def test_the_standard_library_gives_seeds_with_no_input():
    found = usable_seeds(None)
    assert len(found) > 500
    assert not any(s.path.startswith(("test/", "idlelib/idle_test")) for s in found)


def test_a_seed_holding_text_of_a_benchmark_file_is_dropped_strings_nested_in_lists_too(tmp_path):
    import json

    leaked = seeds(2)[1]
    benchmark = tmp_path / "mbpp.jsonl"  # the leaked function as a string inside a list, as MBPP's tests are
    benchmark.write_text(json.dumps({"task_id": 1, "test_list": ["assert f1(1) == 2", leaked.text]}) + "\n")
    config = SelfCodeAlignConfig(samples=1, shots=1, humaneval=False, decontaminate=[str(benchmark)])
    out = generator(config, scripted([GOOD])).run_batch(0, seeds(2))
    dropped = [r for r in out.rejects if r.stage == "decontamination"]
    assert [r.source_start for r in dropped] == [leaked.start] and len(out.kept) == 1


def test_the_paper_defaults_are_the_reference_codes():
    """SelfCodeAlign's `self_ossinstruct.py` and its SC2-Instruct README; Magicoder's `generate_data.py`."""
    from synth.generators.self_code_align import CATEGORIES, DIFFICULTIES
    from synth.schemas.code import OSSInstructConfig

    config = SelfCodeAlignConfig()
    assert (config.shots, config.response_shots, config.samples, config.max_task_words) == (8, 1, 10, 200)
    for sampling in (config.concepts_sampling, config.task_sampling, config.response_sampling):
        assert (sampling.temperature, sampling.max_tokens) == (0.7, 1536)
    assert (config.sandbox.timeout_s, config.sandbox.cpu_s, config.sandbox.memory_mb) == (4.0, 4, 1024)
    assert Counter(CATEGORIES) == {"function implementation": 2, "class implementation": 1, "program implementation": 1}
    assert DIFFICULTIES == ("easy", "medium", "hard")
    oss = OSSInstructConfig()
    assert (oss.min_lines, oss.max_lines, oss.sampling.temperature, oss.sampling.max_tokens) == (1, 15, 0.0, 2500)
