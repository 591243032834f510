"""Unnatural Instructions, one batch at a time on a scripted model: the prompt shows one seed set of
three and the sets rotate; the core step samples at p = 0.99 and the output step greedily; each of
the paper's filters makes a reject with stage and reason; the constraints stay out of the training
text; each paraphrase is linked to its core and carries its input."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from synth.engines import ChatRequest, ScriptedEngine
from synth.generators.seeds import SeedFileError
from synth.generators.unnatural import (
    CORE,
    EXPAND,
    OUTPUT,
    SLOT,
    TEMPLATES,
    UnnaturalGenerator,
    read_seed_sets,
)
from synth.prompts import languages
from synth.schemas.unnatural import UnnaturalConfig

DUPLICATE = " Name a fruit of the colour given.\nInput: red\nConstraints: One word."


def _seed(request: ChatRequest) -> int:
    return request.sampling.seed if request.sampling and request.sampling.seed is not None else 0


def reply(request: ChatRequest) -> str:
    """A scripted model. Core prompts, by seed: a reply missing its constraints, a copy of the
    prompt's first demonstration, an example every such prompt repeats, or a new example. Outputs
    answer the instruction; about half the paraphrases lose their {INPUT} slot."""
    seed = _seed(request)
    if request.tag == CORE:
        kind = seed % 5
        if kind == 0:
            return f" Spell the word backwards.\nInput: word {seed}\n\nExample 5"
        if kind == 1:
            first = re.search(r"Example 1\nInstruction: (.+)", request.raw or "")
            assert first is not None
            return f" {first[1]}\nInput: something new {seed}\nConstraints: None."
        if kind == 2:
            return DUPLICATE + "\n\nExample 5\nInstruction: more"
        return f" Describe object {seed} briefly.\nInput: object {seed}\nConstraints: One sentence.\n\nExample 5"
    if request.tag == OUTPUT:
        return f"An answer to: {request.messages[-1].content.splitlines()[0]}"
    assert request.tag == EXPAND
    asked = re.findall(r"Instruction: (.+)", request.raw or "")[-1]
    if seed % 2 == 1:
        return f" Do this: {asked}"
    return f" Here is the input: {SLOT}\nPlease {asked.lower()} (take {seed % 97})"


def responder():
    return reply


def config(**changes) -> UnnaturalConfig:
    return UnnaturalConfig(**{"num_records": 20, "batch_size": 10, "paraphrases": 2, "seed": 3, **changes})


def batch(cfg: UnnaturalConfig, first: int = 0, count: int = 20):
    engine = ScriptedEngine(reply)
    gen = UnnaturalGenerator(cfg, engine, read_seed_sets(cfg.seeds, cfg.language), run_id="r")
    return gen.run_batch(0, first, count), engine


def test_the_prompt_shows_one_seed_set_of_three_and_the_sets_rotate():
    _, engine = batch(config(), count=10)
    sets = read_seed_sets()
    cores = [r for r in engine.calls[0] if r.tag == CORE]
    for number, request in enumerate(cores):
        shown = re.findall(r"Instruction: (.+)", request.raw or "")
        assert shown == [d.instruction for d in sets[number % 5]]
        assert request.raw.endswith("Example 4\nInstruction:")
    assert len(sets) == 5 and all(len(s) == 3 for s in sets)


def test_the_core_step_samples_at_p_099_and_the_output_is_greedy():
    _, engine = batch(config())
    requests = [r for call in engine.calls for r in call]
    core = [r.sampling for r in requests if r.tag == CORE]
    outputs = [r.sampling for r in requests if r.tag == OUTPUT]
    assert core and all(s.top_p == 0.99 and s.temperature == 1.0 for s in core)
    assert len({s.seed for s in core}) == len(core)  # a seed per prompt
    assert outputs and all(s.temperature == 0.0 for s in outputs)


def test_each_filter_makes_a_reject_with_its_stage_and_reason_and_nothing_is_lost():
    out, _ = batch(config())
    reasons = Counter((r.stage, r.reason) for r in out.rejects if r.stage != "expansion")
    assert reasons[("parse", "missing field: constraints")] > 0
    assert reasons[("novelty", "copy of a demonstration")] > 0
    assert reasons[("dedup", "duplicate instruction and input")] > 0
    cores = [r for r in out.kept if r.unnatural and r.unnatural.paraphrase == 0]
    # Every prompt ends as one core record or one reject; the repeated example is kept once.
    assert len(cores) + sum(reasons.values()) == 20
    assert sum(r.instruction.startswith("Name a fruit") for r in cores) == 1


def test_constraints_are_kept_in_the_block_not_in_the_training_text():
    out, engine = batch(config())
    cores = [r for r in out.kept if r.unnatural.paraphrase == 0]
    assert cores
    for record in cores:
        assert record.unnatural.constraints == "One sentence." or record.instruction.startswith("Name a fruit")
        assert all(record.unnatural.constraints not in m.content for m in record.messages)
        assert record.unnatural.core_id == record.id
    # ...but the output was written from them.
    outputs = [r for call in engine.calls for r in call if r.tag == OUTPUT]
    assert all("Constraints: " in r.messages[-1].content for r in outputs)


def test_each_paraphrase_is_linked_to_its_core_and_keeps_its_input_and_output():
    out, _ = batch(config())
    cores = {r.id: r for r in out.kept if r.unnatural.paraphrase == 0}
    paraphrases = [r for r in out.kept if r.unnatural.paraphrase > 0]
    assert paraphrases
    for p in paraphrases:
        core = cores[p.unnatural.core_id]
        assert p.parent_id == core.id and p.operation == "paraphrase"
        assert p.unnatural.template.count(SLOT) == 1
        assert p.instruction == p.unnatural.template.replace(SLOT, core.input)
        assert p.output == core.output and p.unnatural.constraints == core.unnatural.constraints
    lost = [r for r in out.rejects if r.stage == "expansion"]
    assert lost and all(r.reason == "not exactly one {INPUT} slot" and r.parent_id in cores for r in lost)
    assert len(paraphrases) + len(lost) == 2 * len(cores)


def test_without_expansion_only_core_records_are_written():
    out, engine = batch(config(expand=False))
    assert out.kept and all(r.unnatural.paraphrase == 0 for r in out.kept)
    assert not any(r.tag == EXPAND for call in engine.calls for r in call)


def test_every_template_has_a_chinese_version_and_the_zh_seeds_parse():
    assert "zh" in languages()
    assert TEMPLATES.load("zh").keys() == TEMPLATES.load("en").keys()
    out, engine = batch(config(language="zh"), count=5)
    # The Chinese prompts show the Chinese seeds under the same English labels, so a reply parses
    # the same way in either language: the scripted replies end as they do in an English run.
    core = [r for r in engine.calls[0] if r.tag == CORE]
    assert all(
        re.search(r"Instruction: [\u4e00-\u9fff]", r.raw) and r.raw.endswith("Example 4\nInstruction:") for r in core
    )
    english, _ = batch(config(), count=5)
    assert sorted((r.stage, r.reason) for r in out.rejects) == sorted((r.stage, r.reason) for r in english.rejects)
    assert len(out.kept) == len(english.kept) > 0
    assert len(read_seed_sets(None, "zh")) == 5


@pytest.mark.parametrize(
    ("lines", "where"),
    [
        (['{"instruction": "a", "input": "b", "constraints": "c"}', "{not json"], ":2: invalid JSON"),
        (['{"instruction": "a", "input": "b"}'], ":1: missing or empty field 'constraints'"),
        ([json.dumps({"instruction": "a", "input": "b", "constraints": "c"})] * 4, ":4: seed set #1 has 1 examples"),
    ],
)
def test_a_bad_seed_file_fails_naming_its_line(tmp_path, lines, where):
    path = tmp_path / "seeds.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(SeedFileError, match=re.escape(f"{path}{where}")):
        read_seed_sets(path)


def test_a_seed_line_in_the_published_datasets_form_gives_its_first_instance(tmp_path):
    def released(n):
        instances = [{"input": f"in {n}", "constraints": f"c {n}", "output": "o"}, {"input": "x", "constraints": "y"}]
        return json.dumps({"instruction": f"task {n}", "instances": instances})

    path = tmp_path / "seeds.jsonl"
    path.write_text("\n".join(released(n) for n in range(3)) + "\n")
    [demos] = read_seed_sets(path)
    assert [(d.instruction, d.input, d.constraints) for d in demos] == [
        (f"task {n}", f"in {n}", f"c {n}") for n in range(3)
    ]
    path.write_text(json.dumps({"instruction": "t", "instances": [{"input": "i"}]}) + "\n")
    with pytest.raises(SeedFileError, match=re.escape(f"{path}:1: missing or empty field 'constraints'")):
        read_seed_sets(path)
