"""Text filters on languages written without spaces (Chinese, Japanese), and English unchanged.

Every filter tokenizes through `synth.filters.tokens`: a Chinese or Japanese character is a token,
so near duplicates, novelty, decontamination and length rules work there; on English text each
filter finds exactly the tokens it found before the policy existed.
"""

from __future__ import annotations

import json
import random
import re

import numpy as np
import polars as pl
import pytest

from synth.filters import InstructionHeuristics, RougeNoveltyIndex, rouge_l, rouge_tokens
from synth.filters import minhash as minhash_module
from synth.filters.decontamination import DecontaminationFilter, ngrams
from synth.filters.dedup import MinHashIndex, NearDedupFilter, record_text
from synth.filters.heuristics import (
    SELF_INSTRUCT_KEYWORDS,
    HeuristicFilter,
    is_short_refusal,
    only_punctuation_and_stop_words,
)
from synth.filters.minhash import SCHEME, sign, similarity
from synth.filters.tokens import WORD_PATTERN, word_tokens, words
from synth.schemas import Record
from synth.schemas.curation import DecontaminationConfig, HeuristicsConfig, MinHashConfig
from tests.filters.test_novelty import reference_rouge_l

# Chinese: a task, its one-character variant (蓝色 "blue" -> 红色 "red"), and a different task.
ZH_TASK = "请用三句话解释为什么天空在白天看起来是蓝色的，并举一个日常生活中的例子。"
ZH_VARIANT = ZH_TASK.replace("蓝", "红")
ZH_OTHER = "列出五种适合在阳台上种植的蔬菜，并说明每种蔬菜需要多少阳光。"
ZH_ANSWER = "白天的阳光穿过大气层时，波长较短的蓝光被空气分子散射得最多，所以我们看到的天空是蓝色的。"
# Japanese: "Explain in three lines why the sea looks blue" / "...green", and a different task.
JA_TASK = "海が青く見える理由を、小学生にもわかるように三つの文で説明してください。"
JA_VARIANT = JA_TASK.replace("青", "緑")
JA_OTHER = "週末に家族で楽しめる料理のレシピを一つ考えて、材料と手順を書いてください。"

ENGLISH = [
    "Explain why the sky looks blue during the day.",
    "Explain why the sky looks red at sunset, in 2 sentences!",
    "Write_a snake_case NAME for 3 variables: x1, y2 and Z3?",
    "It’s — as they say — a “quoted” phrase (with typographic punctuation).",
    "Summarize the article in three bullet points; keep it short.",
    "",
    "!!! ???",
]


def rec(instruction: str, output: str = ZH_ANSWER, input: str = "") -> Record:
    return Record(generator="test", instruction=instruction, input=input, output=output)


# -- the policy -------------------------------------------------------------------------------------


def test_spaceless_characters_are_tokens_of_their_own():
    assert words("写一首关于春天的诗。") == ["写", "一", "首", "关", "于", "春", "天", "的", "诗"]
    assert words("用Python3.11写 代码！") == ["用", "Python3.11", "写", "代", "码"]
    assert word_tokens("コーヒーを飲みたい") == ["コ", "ー", "ヒ", "ー", "を", "飲", "み", "た", "い"]
    assert rouge_tokens("用Python写代码") == ["用", "python", "写", "代", "码"]
    assert rouge_tokens("Café naïve") == ["café", "naïve"]  # accented letters stay inside their words
    assert words("กินข้าว") == ["กิ", "น", "ข้", "า", "ว"]  # a Thai letter keeps its vowel and tone marks


def random_ascii(rng: random.Random) -> str:
    alphabet = "abcXYZ019_'-.,!? \t\n"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))


def test_on_text_without_spaceless_letters_each_filter_keeps_its_old_tokens():
    rng = random.Random(5)
    texts = [*ENGLISH, "Ça va, naïve Straße? Привет, мир!", *(random_ascii(rng) for _ in range(300))]
    for text in texts:
        assert words(text) == text.split()
        assert word_tokens(text) == re.findall(r"\w+", text)
        assert ngrams(text, 3) == ngrams_by_old_rule(text, 3)
    for text in [*ENGLISH, *(random_ascii(rng) for _ in range(300))]:
        assert rouge_tokens(text) == rouge_score_tokens(text)


def ngrams_by_old_rule(text: str, n: int) -> set[tuple[str, ...]]:
    found = re.findall(r"\w+", text.lower())
    if 0 < len(found) < n:
        return {tuple(found)}
    return {tuple(found[i : i + n]) for i in range(len(found) - n + 1)}


def test_polars_and_python_read_the_pattern_alike():
    texts = [ZH_TASK, JA_TASK, "用Python3写代码", "กินข้าว", "한국어 문장입니다", "Ça va? naïve", *ENGLISH]
    assert pl.Series(texts).str.extract_all(WORD_PATTERN).to_list() == [word_tokens(t) for t in texts]


# -- MinHash ----------------------------------------------------------------------------------------


def test_a_one_character_variant_of_a_chinese_record_is_a_near_duplicate():
    config = MinHashConfig()
    batch = sign([record_text(r) for r in (rec(ZH_TASK), rec(ZH_VARIANT))], config)
    jaccard = similarity(config, batch.sigs[0], batch.sigs[1], batch.shingle_set(0), batch.shingle_set(1))
    assert jaccard > config.threshold + 0.05
    result = NearDedupFilter(MinHashIndex(config)).apply([rec(ZH_TASK), rec(ZH_VARIANT), rec(ZH_OTHER, output="")])
    assert [r.instruction for r in result.kept] == [ZH_TASK, ZH_OTHER]
    assert [r.reason for r in result.rejects] == ["near duplicate"]


def test_a_one_character_variant_of_a_japanese_record_is_a_near_duplicate():
    answer = "海の水は赤い光を吸収し、青い光を多く散乱するので、海は青く見えます。空の色も映ります。"
    records = [rec(JA_TASK, answer), rec(JA_VARIANT, answer), rec(JA_OTHER, "材料と手順です。")]
    result = NearDedupFilter(MinHashIndex(MinHashConfig())).apply(records)
    assert [r.instruction for r in result.kept] == [JA_TASK, JA_OTHER]


def test_distinct_chinese_instructions_are_kept():
    tasks = [ZH_TASK, ZH_OTHER, "把下面这段话翻译成英文：今天的天气很好。", "写一首关于秋天落叶的五言绝句。"]
    result = NearDedupFilter(MinHashIndex(MinHashConfig())).apply([rec(t, output="") for t in tasks])
    assert [r.instruction for r in result.kept] == tasks


@pytest.mark.parametrize("lowercase", [True, False])
def test_english_signatures_equal_those_of_the_old_word_tokens(monkeypatch, lowercase):
    """The scheme keeps its version because English signatures are bit for bit what `\\w+` gave."""
    config = MinHashConfig(lowercase=lowercase)
    texts = [*ENGLISH, "Ça va, naïve Straße? Привет, мир!", ZH_TASK]
    now = sign(texts, config)
    monkeypatch.setattr(minhash_module, "WORD_PATTERN", r"\w+")  # the tokenizer before the policy
    before = sign(texts, config)
    assert SCHEME == "synth-minhash-v2"
    np.testing.assert_array_equal(now.sigs[:-1], before.sigs[:-1])
    np.testing.assert_array_equal(now.shingles[: now.offsets[-2]], before.shingles[: before.offsets[-2]])
    assert not np.array_equal(now.sigs[-1], before.sigs[-1])  # Chinese: one token per character now


# -- ROUGE-L novelty --------------------------------------------------------------------------------


def test_a_one_character_variant_of_a_chinese_instruction_has_a_high_rouge_l():
    assert rouge_l(rouge_tokens(ZH_TASK), rouge_tokens(ZH_VARIANT)) > 0.95
    assert rouge_l(rouge_tokens(JA_TASK), rouge_tokens(JA_VARIANT)) > 0.95
    index = RougeNoveltyIndex(threshold=0.7)
    index.add([ZH_TASK, JA_TASK])
    verdicts = index.check([ZH_VARIANT, ZH_OTHER, JA_VARIANT, JA_OTHER])
    assert [v.kept for v in verdicts] == [False, True, False, True]


def rouge_score_tokens(text: str) -> list[str]:
    """The reference `rouge_score` tokenizer without stemming: lowercase, non-[a-z0-9] separates."""
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).split()


def reference_score(a: str, b: str) -> float:
    """ROUGE-L F1 from `rouge_score` itself where it is installed, else from its tokenizer and a
    textbook LCS (the same definition)."""
    try:
        from rouge_score import rouge_scorer
    except ImportError:
        return reference_rouge_l(rouge_score_tokens(a), rouge_score_tokens(b))
    return rouge_scorer.RougeScorer(["rougeL"]).score(a, b)["rougeL"].fmeasure


def test_english_rouge_l_equals_the_reference_scorer():
    for a in ENGLISH:
        for b in ENGLISH:
            assert rouge_l(rouge_tokens(a), rouge_tokens(b)) == pytest.approx(reference_score(a, b), abs=1e-12)


# -- decontamination --------------------------------------------------------------------------------


def test_a_chinese_benchmark_question_quoted_in_a_record_is_caught(tmp_path):
    bench = tmp_path / "bench.jsonl"
    items = [
        "一个水池有两个进水管，甲管单独注满需要六小时，乙管需要四小时，两管同时打开需要几小时？",
        "日本の首都はどこですか？",
    ]
    bench.write_text("\n".join(json.dumps({"question": q}) for q in items), encoding="utf-8")
    f = DecontaminationFilter(DecontaminationConfig(benchmarks=[str(bench)]))
    quoted = rec("请解答下面这道题，并写出步骤：" + items[0] + "谢谢！")
    quoted_ja = rec("次の質問に答えてください。日本の首都はどこですか？理由も添えて。", output="東京です。")
    clean = rec(ZH_TASK)
    result = f.apply([quoted, clean, quoted_ja])
    assert result.kept == [clean]
    assert [r.detail for r in result.rejects] == ["bench.jsonl:1", "bench.jsonl:2"]


# -- heuristics -------------------------------------------------------------------------------------

ZH = InstructionHeuristics(language="zh")
EN = InstructionHeuristics()


@pytest.mark.parametrize(
    "text", [ZH_TASK, ZH_OTHER, "《红楼梦》的作者是谁？请简要介绍他的生平。", "“春眠不觉晓”的下一句是什么？"]
)
def test_chinese_instructions_of_normal_length_pass_for_zh(text):
    assert ZH.reason(text) is None


def test_japanese_instructions_pass_for_ja():
    ja = InstructionHeuristics(language="ja")
    assert ja.reason(JA_TASK) is None and ja.reason(JA_OTHER) is None
    assert ja.reason("説明").startswith("too short")


@pytest.mark.parametrize(
    ("text", "reason_start"),
    [
        ("写诗", "too short"),
        ("写" * 151, "too long"),
        ("，然后把它翻译成英文。", "starts with punctuation"),
        ("。写一首关于春天的诗", "starts with punctuation"),
    ],
)
def test_chinese_rules_reject_with_their_reason(text, reason_start):
    assert ZH.reason(text).startswith(reason_start)


def test_a_non_ascii_first_character_is_rejected_only_in_english():
    assert EN.reason(ZH_TASK) == "starts with a non-ASCII character"
    assert EN.reason("Éxplique la fotosíntesis a un niño pequeño") == "starts with a non-ASCII character"
    assert ZH.reason(ZH_TASK) is None
    assert InstructionHeuristics(language="es").reason("¿Por qué el cielo es azul durante el día?") is None


def test_self_instructs_call_is_english_as_before():
    h = InstructionHeuristics(min_words=3, max_words=150, keywords=SELF_INSTRUCT_KEYWORDS)
    assert h.language == "en"
    assert h.reason("Explain why the sky looks blue during the day") is None
    assert h.reason(ZH_TASK) == "starts with a non-ASCII character"


def test_record_lengths_count_characters_of_chinese():
    f = HeuristicFilter(HeuristicsConfig(language="zh"))
    assert f.reason(rec(ZH_TASK)) is None
    assert f.reason(rec("写诗")) == "instruction under 3 words"
    assert f.reason(rec(ZH_TASK, output="好" * 4001)) == "output over 4000 words"


@pytest.mark.parametrize(
    "output",
    [
        "抱歉，作为一个AI语言模型，我无法回答这个问题。",
        "对不起，这个我做不到。",
        "我只是一个人工智能，不能提供医疗建议。",
    ],
)
def test_a_chinese_refusal_is_caught_by_the_chinese_list(output):
    assert HeuristicFilter(HeuristicsConfig(language="zh")).reason(rec(ZH_TASK, output)) == "refusal or apology"
    assert is_short_refusal(output, language="zh")
    assert not is_short_refusal(output)  # the English list does not know these phrases


def test_a_long_chinese_answer_mentioning_an_apology_is_not_a_refusal():
    long_answer = "抱歉信的写法如下：" + ZH_ANSWER * 3
    assert not is_short_refusal(long_answer, language="zh")


def test_languages_without_lists_have_no_refusal_or_stop_word_rule():
    assert is_short_refusal("Sorry, I cannot help with that.")
    assert not is_short_refusal("Sorry, I cannot help with that.", language="fr")
    assert (
        HeuristicFilter(HeuristicsConfig(language="fr")).reason(rec("Explique la photosynthèse simplement", "Sorry."))
        is None
    )
    assert not only_punctuation_and_stop_words("oui, et alors ?", language="fr")  # not judged by English words
    assert only_punctuation_and_stop_words("... !!!", language="fr")  # no word at all is still nothing


@pytest.mark.parametrize(
    ("text", "empty"),
    [
        ("好的，是的。", True),
        ("嗯嗯，我也是！", True),
        ("", True),
        ("好的，春天来了。", False),
        ("OK的", False),
    ],
)
def test_chinese_stop_words(text, empty):
    assert only_punctuation_and_stop_words(text, language="zh") is empty


def test_english_stop_word_and_refusal_rules_are_unchanged():
    assert only_punctuation_and_stop_words("It is, and so on... yes!")
    assert not only_punctuation_and_stop_words("It is a cat.")
    assert is_short_refusal("As an AI, I do not have opinions.")
    assert not is_short_refusal("Sorry " + "word " * 80)


def test_the_language_must_be_an_iso_639_1_code():
    with pytest.raises(ValueError, match="language"):
        HeuristicsConfig(language="chinese")
