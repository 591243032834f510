"""A record's page, arranged: its text, what dropped it (a reject), the preference pair, where it came
from, its lineage, its scores, and every non-empty column. Values become plain strings here; the
templates escape them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from synth.schemas.records import blocks

# Section title -> the columns it shows, in order. A section with no non-empty column is left out.
SECTIONS: dict[str, list[str]] = {
    "Provenance": [
        "generator",
        "model",
        "run_id",
        "batch",
        "seed",
        "created_at",
        "template",
        "template_hash",
        "sampling",
        "demos",
    ],
    "Evolution": ["operation", "round", "root_id"],
    "Backtranslation": ["source_doc", "source_id", "source_start", "source_end", "grades"],
    "Judge": ["judge_score", "judge_model", "judge_rubric", "judge_rationale"],
    "Selection": [
        "selection_method",
        "selection_rank",
        "selection_distance",
        "complexity_score",
        "quality_score",
        "ifd",
        "response_tokens",
    ],
    "Curation": ["novelty_rouge_l", "novelty_neighbors", "language", "ability", "tags", "is_classification"],
}
TEXT_COLUMNS = ("instruction", "input", "output")
REJECT_COLUMNS = ("phase", "stage", "reason", "detail", "raw")
PAIR_SIDES = ("chosen", "rejected")
# Long or multi-line values are shown in a <pre> block.
LONG = 80


@dataclass(frozen=True)
class Field:
    """A column as the page shows it: its name, its value as text, and whether that text is long
    or multi-line (shown in a block of its own)."""

    name: str
    text: str
    long: bool

    @classmethod
    def of(cls, name: str, value: Any) -> Field:
        text = shown(value)
        return cls(name, text, len(text) > LONG or "\n" in text)


def present(value: Any) -> bool:
    """Whether a column holds something worth showing (not null, not empty)."""
    if value is None:
        return False
    if isinstance(value, str | list | tuple | dict):
        return any(present(v) for v in value.values()) if isinstance(value, dict) else len(value) > 0
    return True


def shown(value: Any) -> str:
    """A column's value as the text the page shows."""
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, dict):
        return "\n".join(f"{k}: {shown(v)}" for k, v in value.items() if present(v))
    if isinstance(value, list | tuple):
        if value and all(isinstance(v, dict) for v in value):
            return json.dumps(value, ensure_ascii=False, indent=1, default=str)
        return "\n".join(shown(v) for v in value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def fields(row: dict[str, Any], names: list[str] | tuple[str, ...]) -> list[Field]:
    return [Field.of(name, row[name]) for name in names if name in row and present(row[name])]


def arrange(row: dict[str, Any]) -> dict[str, Any]:
    """The record's columns grouped for its page; each generator's block it carries is a section of
    its own, under the block's title."""
    pair_block = row.get("preferences")
    pair_row = pair_block if isinstance(pair_block, dict) else {}
    pair = [
        {
            "side": side,
            "text": pair_row.get(side) or "",
            "fields": fields(pair_row, [f"{side}_score", f"{side}_model", f"{side}_rationale"]),
        }
        for side in PAIR_SIDES
    ]
    return {
        "text": fields(row, TEXT_COLUMNS),
        "messages": [m for m in row.get("messages") or [] if isinstance(m, dict)],
        "reject": fields(row, REJECT_COLUMNS),
        "pair": pair if any(side["text"] for side in pair) else [],
        "sections": {title: found for title, names in SECTIONS.items() if (found := fields(row, names))},
        "blocks": [
            (block.title or name, found)
            for name, block in blocks().items()
            if block.section and isinstance(value := row.get(name), dict) and (found := fields(value, list(value)))
        ],
        "all": fields(row, list(row)),
    }
