"""Decontamination: drop records that overlap benchmark prompts by a shared word n-gram.

Words are `tokens.word_tokens`: runs of \\w, except that each letter of a script written without
spaces is a word of its own, so n counts characters in Chinese or Japanese text and a benchmark
item quoted inside a longer text is found there too.

Benchmark files are JSONL (every string value of an object, or a string per line), Parquet
(every text column of a row) or plain text (one item per line); control characters in them are
refused naming the file and line (or row), as in every input. Each reject names the benchmark
items it hit, and `hits` counts them per item, so the report says which benchmark items leaked.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import polars as pl

from synth.filters.base import reject
from synth.filters.tokens import word_tokens
from synth.schemas import Outcome, Record
from synth.schemas.curation import DecontaminationConfig
from synth.shards.files import json_line, utf8_lines
from synth.text import control_problem


class BenchmarkFileError(ValueError):
    """A benchmark file that cannot be read; the message names it (and the line)."""


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    """Word n-grams of a text; a text shorter than n words is one gram of all its words."""
    return _grams(word_tokens(text.lower()), n)


def _grams(words: list[str], n: int) -> set[tuple[str, ...]]:
    if 0 < len(words) < n:
        return {tuple(words)}
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def benchmark_texts(path: Path, nested: bool = False) -> Iterator[tuple[str, list[str]]]:
    """(item name, its texts) of every item of a benchmark file: a Parquet row's text columns, a
    JSONL line's string or its object's string values (`nested`: also the strings inside its lists
    and objects), a text file's line."""
    if path.suffix == ".parquet":
        frame = pl.read_parquet(path, glob=False)
        texts = [c for c, t in frame.schema.items() if t == pl.String]
        if not texts:
            raise BenchmarkFileError(f"{path}: no text columns")
        for i, row in enumerate(frame.select(texts).iter_rows(named=True), start=1):
            for column, value in row.items():
                if value and (problem := control_problem(value)):
                    raise BenchmarkFileError(
                        f"{path}: row {i}: column {column!r} holds a {problem}; only text, tabs and line breaks are read"
                    )
            yield f"{path.name}:{i}", [v for v in row.values() if v]
        return
    for i, line in utf8_lines(path, BenchmarkFileError):
        if not line.strip():
            continue
        if path.suffix == ".jsonl":
            yield f"{path.name}:{i}", list(_strings(json_line(path, i, line, BenchmarkFileError), nested, top=True))
        else:
            yield f"{path.name}:{i}", [line]


def _strings(value: object, nested: bool, top: bool = False) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict) and (top or nested):
        for item in value.values():
            yield from _strings(item, nested)
    elif isinstance(value, list) and nested:
        for item in value:
            yield from _strings(item, nested)


def benchmark_items(path: Path) -> Iterator[tuple[str, str]]:
    """(item name, text) of every item of a benchmark file (`benchmark_texts`, joined by line breaks)."""
    for name, texts in benchmark_texts(path):
        yield name, "\n".join(texts)


class DecontaminationFilter:
    stage = "decontamination"

    def __init__(self, config: DecontaminationConfig) -> None:
        self.config = config
        self.index: dict[tuple[str, ...], str] = {}
        self.lengths: set[int] = set()  # gram lengths in the index (short items give shorter ones)
        for file in config.benchmarks:
            path = Path(file)
            if not path.is_file():
                raise BenchmarkFileError(f"{path}: no such file")
            for name, text in benchmark_items(path):
                for gram in ngrams(text, config.ngram):
                    self.index.setdefault(gram, name)
                    self.lengths.add(len(gram))
        self.hits: Counter[str] = Counter()

    def apply(self, records: Sequence[Record]) -> Outcome:
        result = Outcome()
        for r in records:
            items: set[str] = set()
            for name in self.config.fields:
                words = word_tokens(getattr(r, name).lower())
                for n in self.lengths:
                    items.update(self.index[g] for g in _grams(words, n) if len(g) == n and g in self.index)
            if items:
                self.hits.update(items)
                result.rejects.append(
                    reject(r, self.stage, "overlaps a benchmark item", detail=", ".join(sorted(items)))
                )
            else:
                result.kept.append(r)
        return result
