"""Self-Instruct's instruction heuristics: each rule rejects with its own reason."""

from __future__ import annotations

import pytest

from synth.filters import InstructionHeuristics

H = InstructionHeuristics()


@pytest.mark.parametrize(
    ("text", "reason_start"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("Sort these numbers", "too short"),
        (" ".join(["word"] * 151), "too long"),
        ("Describe the image of a sunset over the hills", "non-text modality (image)"),
        ("Plot the sales numbers for the last quarter", "non-text modality (plot)"),
        ("Go to the website and summarize its front page", "non-text modality (go to)"),
        ("Write a program that reverses a linked list in C", "starts with 'write a program'"),
        ('"Translate this sentence into French for me"', "starts with punctuation"),
        ("Éxplique la fotosíntesis a un niño pequeño", "starts with a non-ASCII"),
    ],
)
def test_rule_rejects_with_its_reason(text, reason_start):
    assert H.reason(text).startswith(reason_start)


@pytest.mark.parametrize(
    "text",
    [
        "Explain why the sky looks blue during the day",  # 9 words
        "List four uses for baking soda",  # 6 words
        " ".join(["word"] * 150),  # exactly the upper bound
        "Write a short program description for a todo app",  # "program" alone is fine
        "Describe how a mapping between keys and values works",  # "mapping" is not "map"
    ],
)
def test_good_instructions_pass(text):
    assert H.reason(text) is None


def test_word_bounds_are_configurable():
    strict = InstructionHeuristics(min_words=5, max_words=8)
    assert strict.reason("List four uses for soda") is not None  # 5 words: <= min
    assert strict.reason("List four uses for baking soda") is None
    assert strict.reason("List four uses for baking soda in the kitchen") is not None
