"""The Chinese defaults: seed tasks with their abilities, and one Chinese template per English one.

The Chinese templates keep every marker that the reply parsers, prefills and stop strings read in
English ("Task N:", "Input:", "#Rewritten Prompt#:", "Score: N", ...), and the same placeholders.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

import synth.prompts
from synth.generators.seeds import load_seed_tasks, seed_chars
from synth.prompts import Template

SEEDS_DIR = Path(__file__).resolve().parents[2] / "synth" / "generators" / "seeds"
ZH_SEEDS = SEEDS_DIR / "zh_seed_tasks.jsonl"
ZH_ABILITIES = SEEDS_DIR / "zh_seed_abilities.json"
PROMPTS_DIR = Path(synth.prompts.__file__).parent
ZH_PROMPTS = PROMPTS_DIR / "zh"

ABILITIES = {
    "creative_writing",
    "code_generation",
    "logical_reasoning",
    "mathematics",
    "role_play",
    "ethics",
    "brainstorming",
    "closed_qa",
    "open_qa",
    "information_extraction",
}

# Every English template must have a Chinese counterpart in synth/prompts/zh/.
TEMPLATES = sorted(p.stem for p in Path(synth.prompts.__file__).parent.glob("*.txt"))

# What the parsers, prefills and stop strings read (synth/generators/self_instruct*.py,
# evol_instruct.py, backtranslation.py, synth/filters/judge.py), and the labels the prompts show
# for them: wherever an English template has one, its Chinese template has it too, verbatim.
MARKERS = [
    "Task N:",
    "Task:",
    "Example 1",
    "Example N",
    "Input:",
    "Output:",
    "Class label:",
    "Is it classification? Yes",
    "Is it classification? No",
    "Open-ended:",
    "#Given Prompt#:",
    "#Rewritten Prompt#:",
    "#Created Prompt#:",
    "'given prompt'",
    "'rewritten prompt'",
    "'created prompt'",
    '{"verdict": "not equal"}',
    '{"verdict": "equal"}',
    "[TEXT START]",
    "[TEXT END]",
    "Instruction:",
    "Answer:",
    '{"rationale": "...", "score": N}',
    "Score: N",
]

_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
_HAN = re.compile(r"[\u4e00-\u9fff]")


def template(path: Path) -> Template:
    return Template(name=path.stem, text=path.read_text(encoding="utf-8").strip())


# -- seeds ---------------------------------------------------------------------------------------


def test_zh_seeds_load_with_unique_ids_and_enough_tasks():
    tasks = load_seed_tasks(ZH_SEEDS)
    assert len(tasks) >= 48
    ids = [t.id for t in tasks]
    assert len(set(ids)) == len(ids)
    assert ids == [f"zh_seed_task_{i}" for i in range(len(tasks))]
    assert sum(t.is_classification for t in tasks) >= 10


def test_zh_seeds_are_chinese_complete_and_small():
    tasks = load_seed_tasks(ZH_SEEDS)
    for t in tasks:
        assert _HAN.search(t.instruction), t.id
        assert re.fullmatch(r"[a-z0-9]+(_[a-z0-9]+)*", t.name), t.id
        assert len(t.instances) == 1, t.id
        assert t.instances[0].output.strip(), t.id
        assert seed_chars(t) < 1500, t.id
    with_input = sum(bool(t.instances[0].input.strip()) for t in tasks)
    assert len(tasks) // 3 <= with_input <= 2 * len(tasks) // 3


def test_zh_seed_file_lines_keep_the_release_format():
    for line in ZH_SEEDS.read_text(encoding="utf-8").splitlines():
        task = json.loads(line)
        assert list(task) == ["id", "name", "instruction", "instances", "is_classification"]
        assert [list(i) for i in task["instances"]] == [["input", "output"]]


def test_zh_abilities_cover_every_seed_with_one_of_the_ten_each_at_least_four_times():
    ids = {t.id for t in load_seed_tasks(ZH_SEEDS)}
    abilities = json.loads(ZH_ABILITIES.read_text(encoding="utf-8"))
    assert set(abilities) == ids
    assert set(abilities.values()) <= ABILITIES
    counts = Counter(abilities.values())
    assert set(counts) == ABILITIES
    assert min(counts.values()) >= 4


# -- templates -----------------------------------------------------------------------------------


def test_every_english_template_has_a_chinese_one_and_zh_has_no_other():
    assert len(TEMPLATES) >= 20  # the glob found the templates, so the tests below check something
    chinese = sorted(p.stem for p in ZH_PROMPTS.glob("*.txt"))
    assert [n for n in TEMPLATES if n not in chinese] == [], "English templates without a zh/ one"
    assert [n for n in chinese if n not in TEMPLATES] == [], "zh/ templates without an English one"


@pytest.mark.parametrize("name", TEMPLATES)
def test_zh_template_has_the_same_placeholders_as_english(name):
    en, zh = template(PROMPTS_DIR / f"{name}.txt"), template(ZH_PROMPTS / f"{name}.txt")
    assert zh.fields == en.fields
    assert Counter(_PLACEHOLDER.findall(zh.text)) == Counter(_PLACEHOLDER.findall(en.text))


@pytest.mark.parametrize("name", TEMPLATES)
def test_zh_template_keeps_the_english_markers(name):
    en, zh = template(PROMPTS_DIR / f"{name}.txt"), template(ZH_PROMPTS / f"{name}.txt")
    missing = [m for m in MARKERS if m in en.text and m not in zh.text]
    assert not missing, f"zh/{name}.txt lacks {missing}"


@pytest.mark.parametrize("name", TEMPLATES)
def test_zh_template_is_chinese_and_ends_like_english(name):
    en, zh = template(PROMPTS_DIR / f"{name}.txt"), template(ZH_PROMPTS / f"{name}.txt")
    if _PLACEHOLDER.sub("", en.text).strip():
        assert _HAN.search(zh.text), name
    # A template that ends on a label or a placeholder is continued by the model from there
    # (a prefill or the reply's first line): the Chinese one ends on the same line.
    last = en.text.splitlines()[-1]
    if last in MARKERS or _PLACEHOLDER.search(last) or re.fullmatch(r"#\w+ Prompt#:", last):
        assert zh.text.splitlines()[-1] == last, name


def test_zh_classification_examples_are_as_many_and_as_balanced_as_english():
    en = template(PROMPTS_DIR / "self_instruct_classify.txt").text
    zh = template(ZH_PROMPTS / "self_instruct_classify.txt").text
    for answer in ("Yes", "No"):
        marker = f"\nIs it classification? {answer}\n"
        assert zh.count(marker) == en.count(marker)
    assert zh.count("\nTask: ") == en.count("\nTask: ")


def test_zh_templates_render():
    for name in TEMPLATES:
        zh = template(ZH_PROMPTS / f"{name}.txt")
        text = zh.render(**dict.fromkeys(zh.fields, "示例"))
        assert "{{" not in text


def test_zh_templates_name_the_prefilled_labels_the_model_continues():
    # The generators prefill "Open-ended:" and "Instruction:" in English (self_instruct.py,
    # backtranslation.py); the Chinese prompts tell the model to keep them, and to answer yes/no.
    assert "Open-ended:" in template(ZH_PROMPTS / "self_instruct_open_ended.txt").text
    assert "Instruction:" in template(ZH_PROMPTS / "backtranslation_backward.txt").text
    assert "Yes 或 No" in template(ZH_PROMPTS / "self_instruct_classify.txt").text
