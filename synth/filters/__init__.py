"""Curation filters: each says keep, or drop with a reason."""

from synth.filters.heuristics import NON_TEXT_KEYWORDS, InstructionHeuristics
from synth.filters.novelty import NoveltyVerdict, RougeNoveltyIndex, rouge_l, rouge_tokens

__all__ = [
    "NON_TEXT_KEYWORDS",
    "InstructionHeuristics",
    "NoveltyVerdict",
    "RougeNoveltyIndex",
    "rouge_l",
    "rouge_tokens",
]
