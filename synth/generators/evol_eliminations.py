"""Evol-Instruct's elimination rules: when an evolved instruction, its equality verdict or its
response shows a failed evolution (the paper's rules, and ours behind `extra_eliminations`)."""

from __future__ import annotations

import json
import re

from synth.filters.heuristics import is_short_refusal, only_punctuation_and_stop_words

# The paper's refusal rule: the response contains "sorry" and is shorter than 80 words.
REFUSAL_WORD = "sorry"
REFUSAL_MAX_WORDS = 80
# The paper's leaked words: the rewriting prompts' labels and the words those prompts forbid
# (matched case-insensitively, so "#Rewritten Prompt#" is caught by "rewritten prompt").
LEAK_MARKERS = ("given prompt", "rewritten prompt", "created prompt")
# The same words as our Chinese prompts forbid them (absent from English text, so English runs are
# judged exactly as the paper's lists judge them).
LEAK_MARKERS_ZH = ("给定提示", "改写后的提示", "创建的提示")
# Ours (`extra_eliminations`): fragments of the labels and the words small models put in their place.
EXTRA_LEAK_MARKERS = (
    "#given",
    "#rewritten",
    "#created",
    "original prompt",
    "new prompt",
    "original instruction",
    "rewritten instruction",
    "new instruction",
)
# Measured on the embedded 135M model: its verdict follows whichever option is listed first, so it
# cannot judge equality; the order here is arbitrary and a capable model is indifferent to it.
EQUALITY_SCHEMA = {
    "type": "object",
    "properties": {"verdict": {"type": "string", "enum": ["not equal", "equal"]}},
    "required": ["verdict"],
    "additionalProperties": False,
}


def parse_equality(text: str) -> bool | None:
    """True for "equal", False for "not equal", None for anything else.

    Accepted: the JSON `{"verdict": ...}` or the bare verdict words. A reply that merely contains
    "equal" (such as "not equal", "unequal" or "they are equal-ish") is never read as equal.
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None
    verdict = data.get("verdict") if isinstance(data, dict) else text
    if not isinstance(verdict, str):
        return None
    words = re.sub(r"[^a-z ]+", " ", verdict.lower()).split()
    if words == ["equal"]:
        return True
    if words in (["not", "equal"], ["not", "equal", "to", "each", "other"]):
        return False
    return None


def leak_reason(parent: str, evolved: str, extra: bool = False) -> str | None:
    """Why an evolved instruction is unusable before asking the model anything, or None: empty,
    unchanged, or copying the rewriting prompt's words (`extra`: our longer list too)."""
    if not evolved.strip():
        return "empty evolution"
    if " ".join(evolved.lower().split()) == " ".join(parent.lower().split()):
        return "unchanged instruction"
    lowered = evolved.lower()
    for marker in (*LEAK_MARKERS, *LEAK_MARKERS_ZH, *(EXTRA_LEAK_MARKERS if extra else ())):
        if marker in lowered:
            return f"leaked rewriting prompt ({marker})"
    return None


def response_failure(response: str, extra: bool = False, language: str = "en") -> str | None:
    """Why a response shows a failed instruction, or None: the paper's short refusal ("sorry",
    under 80 words; `extra`, or a language other than English: that language's refusal phrases),
    or only punctuation and stop words (of the language)."""
    if len(response.split()) < REFUSAL_MAX_WORDS and REFUSAL_WORD in response.lower():
        return "response is a short refusal"
    if (extra or language != "en") and is_short_refusal(response, REFUSAL_MAX_WORDS, language=language):
        return "response is a short refusal"
    if only_punctuation_and_stop_words(response, language=language):
        return "response is only punctuation and stop words"
    return None
