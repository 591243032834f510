"""OSS-Instruct with a scripted model: snippets drawn from real files, replies parsed into problem and
solution, every other reply a reject with its reason; solutions with asserts run when asked."""

from __future__ import annotations

from collections import Counter

import pytest

from synth.engines import ChatRequest
from synth.engines.scripted import ScriptedEngine
from synth.generators.code_seeds import code_files, line_snippet
from synth.generators.oss_instruct import PROMPT, OSSInstructGenerator, parse_reply, program_with_asserts
from synth.sandbox import Sandbox
from synth.schemas.code import Code, OSSInstructConfig, SandboxConfig
from tests.flows.code_script import seed_folder

GOOD = "[Problem Description]\nWrite `triple(x)`.\n\n[Solution]\n```python\ndef triple(x):\n    return 3 * x\n```\n"
TESTED = GOOD.replace("```\n", "\nassert triple(2) == 6\n```\n")
FAILING = GOOD.replace("```\n", "\nassert triple(2) == 5\n```\n")
OUT_OF_ORDER = "[Solution]\nx = 1\n[Problem Description]\nSomething.\n"


def test_parse_reply_finds_both_sections_in_order_whatever_their_case():
    assert parse_reply(GOOD) == ("Write `triple(x)`.", "```python\ndef triple(x):\n    return 3 * x\n```")
    assert parse_reply(GOOD.lower())[0] == "write `triple(x)`."  # type: ignore[index]
    assert parse_reply("Just code.") == "no [Problem Description] and [Solution] sections"
    assert parse_reply(OUT_OF_ORDER) == "[Solution] comes before [Problem Description]"
    assert parse_reply("[Problem Description]\n\n[Solution]\nx") == "an empty problem or solution"
    assert program_with_asserts(GOOD) is None and "assert triple(2) == 6" in (program_with_asserts(TESTED) or "")


def test_snippets_are_one_to_fifteen_consecutive_lines_of_a_corpus_file(tmp_path):
    import random

    seed_folder(tmp_path / "code")
    files = code_files(str(tmp_path / "code"))
    assert len(files) == 3
    lengths = []
    for n in range(200):
        snippet = line_snippet(files, random.Random(n), 1, 15)
        assert snippet is not None
        source = (tmp_path / "code" / snippet.path.split("/")[-1]).read_text().splitlines()
        assert snippet.text == "\n".join(source[snippet.start - 1 : snippet.end]).rstrip()
        lengths.append(snippet.end - snippet.start + 1)
    assert min(lengths) >= 1 and max(lengths) <= 15 and len(set(lengths)) > 5


def run(config: OSSInstructConfig, replies: list[str]):
    def reply(request: ChatRequest) -> str:
        assert request.tag == PROMPT and request.messages[0].role == "system"
        assert "Code snippet for inspiration:" in request.messages[-1].content
        return replies[request.sampling.seed % len(replies)]

    engine = ScriptedEngine(responder=reply)
    sandbox = Sandbox(SandboxConfig(timeout_s=4, workers=2)) if config.execute else None
    return OSSInstructGenerator(config, engine, run_id="run", sandbox=sandbox).run_batch(0, list(range(24)))


def test_each_seed_becomes_a_record_or_a_reject_with_its_reason(tmp_path):
    seed_folder(tmp_path / "code")
    config = OSSInstructConfig(code=str(tmp_path / "code"), humaneval=False)
    out = run(config, [GOOD, "no sections here", OUT_OF_ORDER])
    assert len(out.kept) + len(out.rejects) == 24 and out.kept
    for record in out.kept:
        assert record.instruction == "Write `triple(x)`." and record.output.startswith("```python")
        assert (
            record.source_doc.rsplit("/", 1)[-1].startswith("module_")
            and record.tags == ["oss-instruct"]
            and Code.of(record) is None
        )
    assert {(r.stage, r.reason) for r in out.rejects} == {
        ("parse", "no [Problem Description] and [Solution] sections"),
        ("parse", "[Solution] comes before [Problem Description]"),
    }


def test_with_execute_solutions_with_asserts_run_and_failures_are_rejects(tmp_path):
    seed_folder(tmp_path / "code")
    config = OSSInstructConfig(code=str(tmp_path / "code"), humaneval=False, execute=True)
    out = run(config, [TESTED, FAILING, GOOD])
    kept = Counter(block.execution if (block := Code.of(r)) else "untested" for r in out.kept)
    assert kept["passed"] > 0 and kept["untested"] > 0
    assert all("untested" in r.tags for r in out.kept if Code.of(r) is None)
    assert {(r.stage, r.reason) for r in out.rejects} == {("execution", "assertion")}
    assert all("AssertionError" in r.detail for r in out.rejects)


def test_min_lines_over_max_lines_is_refused():
    with pytest.raises(ValueError, match="min_lines 9 is over max_lines 3"):
        OSSInstructConfig(min_lines=9, max_lines=3)
