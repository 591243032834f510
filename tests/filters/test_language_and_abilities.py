"""The language check (script first, then lingua) and the model's ability tags, and when the chain
runs them."""

from __future__ import annotations

import json

import pytest

from synth.engines import ChatRequest, ScriptedEngine
from synth.filters.abilities import ABILITIES, AbilityTagger, load_taxonomy, parse_ability
from synth.filters.language import LanguageFilter, languages_of
from synth.flows.curation import build_chain
from synth.schemas import Record
from synth.schemas.curation import AbilitiesConfig, CurationConfig

ZH_TASK = "请写一首关于春天的短诗，描写花开和鸟鸣。"
ZH_ANSWER = "春风吹过山岗，桃花开满枝头，燕子在屋檐下歌唱。"


def rec(instruction: str, output: str, input: str = "") -> Record:
    return Record(generator="test", instruction=instruction, input=input, output=output)


def test_languages_are_told_by_script_for_cjk_and_by_the_detector_elsewhere():
    texts = [
        ZH_TASK,
        "春についての短い詩を書いてください。",
        "봄에 관한 짧은 시를 써 주세요.",
        "Write a short poem about spring and the flowers in the garden.",
        "Écris un court poème sur le printemps et les fleurs du jardin.",
        "Hi",  # too short to tell
        "用Python写一个函数，对列表进行排序并返回结果。",  # mostly Chinese, with a code name
    ]
    assert languages_of(texts) == ["zh", "ja", "ko", "en", "fr", "", "zh"]


def test_the_language_check_fills_the_column_and_drops_answers_in_another_language():
    kept_zh = rec(ZH_TASK, ZH_ANSWER)
    english_answer = rec(ZH_TASK, "Spring wind over the hills, peach blossoms on every branch, swallows sing.")
    translation = rec(
        "把下面这句话翻译成英语。", "Spring has come and the flowers are open.", input="春天来了，花都开了。"
    )
    english_task = rec("Write a short poem about spring and the flowers.", "Spring wind over the hills, blossoms.")
    result = LanguageFilter("zh").apply([kept_zh, english_answer, translation, english_task])
    assert result.kept == [kept_zh, translation]
    assert [r.language for r in result.kept] == ["zh", "zh"]
    assert [(r.stage, r.phase, r.reason) for r in result.rejects] == [
        ("language", "curation", "output in en, not zh"),
        ("language", "curation", "instruction in en, not zh"),
    ]


def scripted(reply):
    calls: list[ChatRequest] = []

    def respond(request: ChatRequest) -> str:
        calls.append(request)
        return reply(request)

    return ScriptedEngine(respond), calls


def test_ability_tags_come_from_one_structured_call_and_an_unreadable_tag_is_a_reject():
    replies = iter([json.dumps({"ability": "creative_writing"}), "I am not sure", "it is mathematics, surely"])
    engine, calls = scripted(lambda r: next(replies))
    records = [rec(ZH_TASK, ZH_ANSWER), rec("Do something", "Something."), rec("What is 2 + 3?", "5")]
    result = AbilityTagger(AbilitiesConfig(), engine).apply(records)
    assert [(r.instruction, r.ability) for r in result.kept] == [
        (ZH_TASK, "creative_writing"),
        ("What is 2 + 3?", "mathematics"),
    ]
    [bad] = result.rejects
    assert (bad.stage, bad.reason, bad.raw) == ("ability", "unparseable ability tag", "I am not sure")
    assert len(calls) == 3 and calls[0].json_schema["properties"]["ability"]["enum"] == list(ABILITIES)
    assert "creative_writing" in calls[0].messages[0].content and ZH_TASK in calls[0].messages[0].content


def test_a_taxonomy_file_replaces_the_default_and_a_key_outside_it_does_not_parse(tmp_path):
    path = tmp_path / "abilities.yaml"
    path.write_text("poetry: writing poems\nprose: writing prose\n")
    assert load_taxonomy(str(path)) == {"poetry": "writing poems", "prose": "writing prose"}
    assert parse_ability(json.dumps({"ability": "mathematics"}), ["poetry", "prose"]) is None
    assert parse_ability("poetry and prose", ["poetry", "prose"]) is None  # two keys: no guess
    (tmp_path / "bad.yaml").write_text("- a list\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: expected a mapping"):
        load_taxonomy(str(tmp_path / "bad.yaml"))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"poetry: writing \x1b[2Jpoems\n", r"abilities\.yaml:1: control character U\+001B"),
        (b'poetry: "writing \\e poems"\n', r"abilities\.yaml: a definition holds a control character U\+001B"),
        (b"poetry: [writing\nprose: x\n", r"abilities\.yaml:\d+: not valid JSON or YAML"),
    ],
)
def test_a_taxonomy_file_that_is_not_plain_text_is_refused_naming_it(tmp_path, content, message):
    from synth.schemas import ConfigFileError

    path = tmp_path / "abilities.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigFileError, match=message):
        load_taxonomy(str(path))


@pytest.mark.parametrize(
    ("config", "language", "stages"),
    [
        (CurationConfig(), "en", ["heuristic", "dedup", "dedup"]),
        (CurationConfig(), "zh", ["heuristic", "language", "dedup", "dedup", "ability"]),
        (CurationConfig(language="zh"), "en", ["heuristic", "language", "dedup", "dedup", "ability"]),
        (
            CurationConfig(language_check={"enabled": False}, abilities={"enabled": False}),
            "zh",
            ["heuristic", "dedup", "dedup"],
        ),
        (
            CurationConfig(language_check={"enabled": True}, abilities={"enabled": True}),
            "en",
            ["heuristic", "language", "dedup", "dedup", "ability"],
        ),
    ],
)
def test_the_language_check_and_ability_tags_are_on_for_data_not_in_english_unless_configured(config, language, stages):
    engine, _ = scripted(lambda r: "{}")
    chain, _ = build_chain(config, None, engine=engine, language=language)
    assert [f.stage for f in chain.filters] == stages
    heuristics = chain.filters[0]
    assert heuristics.config.language == config.data_language(language)


def test_a_mixture_keeps_each_ability_up_to_its_target_and_counts_only_committed_batches():
    from synth.filters.abilities import MixtureFilter

    def tagged(n: int, ability: str | None) -> Record:
        r = rec(f"Task number {n} about something", "An answer.")
        r.ability = ability
        return r

    mixture = MixtureFilter({"mathematics": 2, "ethics": 1}, counts={"mathematics": 1})
    batch = [
        tagged(1, "mathematics"),
        tagged(2, "mathematics"),
        tagged(3, "ethics"),
        tagged(4, "open_qa"),
        tagged(5, None),
    ]
    result = mixture.apply(batch)
    assert [r.instruction for r in result.kept] == [batch[0].instruction, batch[2].instruction]
    assert [r.reason for r in result.rejects] == [
        "mathematics: target of 2 met",
        "open_qa is not in the mixture",
        "untagged is not in the mixture",
    ]
    mixture.rollback()  # the batch did not commit: its records do not count
    assert not mixture.met() and len(mixture.apply(batch[:1]).kept) == 1
    mixture.commit()
    assert mixture.apply([tagged(6, "mathematics")]).rejects and not mixture.met()
    mixture.apply([tagged(7, "ethics")])
    mixture.commit()
    assert mixture.met()


def test_a_mixture_needs_the_tags_and_known_abilities():
    with pytest.raises(ValueError, match="mixture needs the ability tags"):
        CurationConfig(mixture={"ethics": 2}, abilities={"enabled": False})
    engine, _ = scripted(lambda r: "{}")
    with pytest.raises(ValueError, match="poetry not in the ability taxonomy"):
        build_chain(CurationConfig(mixture={"poetry": 2}), None, engine=engine)
    chain, _ = build_chain(CurationConfig(mixture={"ethics": 2}), None, engine=engine)
    assert [f.stage for f in chain.filters][-2:] == ["ability", "mixture"]
