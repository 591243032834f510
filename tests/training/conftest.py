"""Tiny training data and one model trained on it, shared by the training tests (a few steps each:
the point is the plumbing, not the model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

PAIRS = [
    {"instruction": "What is two plus two?", "output": "Two plus two is four."},
    {"instruction": "Name a primary color.", "output": "Red is a primary color."},
    {"instruction": "Translate the word to French.", "input": "Hello", "output": "Bonjour"},
    {"instruction": "Give the opposite of hot.", "output": "The opposite of hot is cold."},
    {"instruction": "What is the capital of Italy?", "output": "Rome is the capital of Italy."},
    {"instruction": "Spell the word dog backwards.", "output": "g-o-d"},
]
REFERENCE = [
    {"instruction": "What is three plus three?", "output": "Three plus three is six."},
    {"instruction": "Name a fruit that is yellow.", "output": "A banana is yellow."},
    {"instruction": "What is the capital of Spain?", "output": "Madrid is the capital of Spain."},
]
# A few steps on short sequences: seconds per run on 2 CPU cores. One thread: on a CPU that other
# jobs keep busy, two threads waiting on each other were many times slower.
TINY = {"max_steps": 3, "batch_size": 2, "max_length": 128, "log_every": 1, "threads": 1}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def pairs_file(tmp_path_factory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("data") / "pairs.jsonl", PAIRS)


@pytest.fixture(scope="session")
def reference_file(tmp_path_factory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("reference") / "reference.jsonl", REFERENCE)


@pytest.fixture(scope="session")
def forward_model(tmp_path_factory, pairs_file) -> tuple[Path, list[str]]:
    """A forward model trained for 3 steps with a third of the pairs held out, and its progress lines."""
    from synth.training import TrainingConfig, train

    lines: list[str] = []
    out = tmp_path_factory.mktemp("models") / "forward"
    train(TrainingConfig(out=out, eval_share=0.34, **TINY), pairs_file, progress=lines.append)
    return out, lines
