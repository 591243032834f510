"""Does the judge tell good answers from bad ones? Grade responses whose quality is known and
measure how well the judge's scores separate them.

A labelled set is a JSONL file of responses (`instruction`, optional `input`, `output`, `label`:
1 good or 0 bad, optional `defect`: what is wrong with a bad one), or the built-in set: the shipped
seed tasks' human-written answers as the good responses, each also given one planted defect
(`DEFECTS`) as a bad one. The report gives:

- ROC AUC of the score for telling good from bad (the chance that a random good response scores
  above a random bad one, ties counting half; 0.5 is a coin, 1.0 perfect separation);
- agreement: the share of responses the curation threshold classifies as their label says (a
  score at or above the threshold keeps the response);
- the score distribution per label and per defect kind, with how many of each the threshold drops.

Replies the judge gives that do not parse are counted and left out of the figures (the curation
chain rejects such a record too).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NotRequired

from typing_extensions import TypedDict

from synth.filters.judge import JudgeFilter, parse_grade
from synth.generators.seeds import load_seed_tasks
from synth.schemas import Record
from synth.shards.files import json_objects

DEFECTS = ("truncated", "other_answer", "refusal", "off_topic", "repeated_question", "wrong_language")

# Off-topic replies: fluent, harmless, and about nothing any seed task asks.
_OFF_TOPIC = {
    "en": (
        "Octopuses have three hearts and blue blood, and they can taste with the suckers on their arms.",
        "The first ticket for a public railway was sold in 1830; before that, coaches carried most travellers.",
        "A good sourdough starter needs flour, water and patience: feed it daily and keep it somewhere warm.",
    ),
    "zh": (
        "章鱼有三颗心脏，血液是蓝色的，还能用腕足上的吸盘尝到味道。",
        "做酸面包的酵头只需要面粉、水和耐心：每天喂养一次，放在温暖的地方。",
        "世界上第一张公共铁路车票卖于一八三〇年，在那之前，大多数旅客坐马车出行。",
    ),
}
_REFUSAL = {
    "en": "I'm sorry, but I can't help with that request.",
    "zh": "抱歉，我无法帮助你完成这个请求。",
}
_OTHER_LANGUAGE = {"en": "zh", "zh": "en"}


# A label as files give it: 1 or 0, and the obvious spellings of the same.
_LABELS = {"1": 1, "0": 0, "1.0": 1, "0.0": 0, "true": 1, "false": 0, "good": 1, "bad": 0}


class CalibrationInputError(ValueError):
    """A labelled file that cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class Labelled:
    """A response whose quality is known: `label` 1 good, 0 bad; `defect` says what is wrong."""

    instruction: str
    input: str
    output: str
    label: int
    defect: str = ""

    def record(self) -> Record:
        return Record(generator="judge-check", instruction=self.instruction, input=self.input, output=self.output)


def read_labelled(path: str | Path) -> list[Labelled]:
    """The labelled responses of a JSONL file; a bad line fails naming the file and the line."""
    file = Path(path)
    items = []
    for number, data in json_objects(file, CalibrationInputError):
        for key in ("instruction", "output"):
            if not isinstance(data.get(key), str) or not data[key].strip():
                raise CalibrationInputError(f"{file}:{number}: field '{key}' is missing, empty or not text")
        for key in ("input", "defect"):
            if not isinstance(data.get(key) or "", str):
                raise CalibrationInputError(f"{file}:{number}: field '{key}' is not text")
        given = data.get("label")
        label = None if given is None or isinstance(given, dict | list) else _LABELS.get(str(given).strip().lower())
        if label is None:
            raise CalibrationInputError(f"{file}:{number}: field 'label' must be 1 (good) or 0 (bad), got {given!r}")
        items.append(
            Labelled(data["instruction"], data.get("input") or "", data["output"], label, data.get("defect") or "")
        )
    if not items:
        raise CalibrationInputError(f"{file}: no labelled responses")
    if len({i.label for i in items}) < 2:
        raise CalibrationInputError(
            f"{file}: every response has label {items[0].label}; give both good (1) and bad (0)"
        )
    return items


def _truncated(output: str) -> str | None:
    """The first 40% of the answer's characters, cut mid-sentence (at a space when one is near, so
    no word is split in text written with spaces); None for an answer too short to cut."""
    if len(output) < 40:
        return None
    cut = int(len(output) * 0.4)
    space = max(output.rfind(" ", 0, cut), output.rfind("\n", 0, cut))
    if space > 0.6 * cut:
        cut = space
    return output[:cut].rstrip(".,;:!?。，！？；：、 \n")


def built_in_set(language: str = "en", seed: int = 0) -> list[Labelled]:
    """The shipped seed tasks' answers (good) and the same tasks with one planted defect each (bad),
    the defect kinds taken in turn (a kind that does not apply, such as truncating a one-word
    label, passes to the next)."""
    tasks = [t for t in load_seed_tasks(None, language) if t.instances]
    others = [t for t in load_seed_tasks(None, _OTHER_LANGUAGE.get(language, "zh")) if t.instances]
    rng = random.Random(f"judge-check:{language}:{seed}")
    off_topic, refusal = _OFF_TOPIC.get(language, _OFF_TOPIC["en"]), _REFUSAL.get(language, _REFUSAL["en"])
    items: list[Labelled] = []
    for k, task in enumerate(tasks):
        first = task.instances[0]
        items.append(Labelled(task.instruction, first.input, first.output, 1))
        other = tasks[(k + 1 + rng.randrange(len(tasks) - 1)) % len(tasks)].instances[0].output
        planted = {
            "truncated": _truncated(first.output),
            "other_answer": other if other.strip() != first.output.strip() else None,
            "refusal": refusal,
            "off_topic": off_topic[k % len(off_topic)],
            "repeated_question": f"{task.instruction}\n{first.input}".strip(),
            "wrong_language": others[k % len(others)].instances[0].output if others else None,
        }
        for step in range(len(DEFECTS)):
            kind = DEFECTS[(k + step) % len(DEFECTS)]
            if planted[kind]:
                items.append(Labelled(task.instruction, first.input, str(planted[kind]), 0, kind))
                break
    return items


def grade(items: Sequence[Labelled], judge: JudgeFilter) -> list[int | None]:
    """The judge's score of each response (None: its reply did not parse or the call failed)."""
    replies = judge.engine.chat([judge.request(i.record()) for i in items])
    scores: list[int | None] = []
    for reply in replies:
        parsed = None if reply.finish_reason == "error" else parse_grade(reply.text)
        scores.append(parsed[0] if parsed else None)
    return scores


def roc_auc(scores: Sequence[float], labels: Sequence[int]) -> float | None:
    """The chance that a random positive scores above a random negative, ties counting half
    (None without both kinds)."""
    good = [s for s, y in zip(scores, labels, strict=True) if y == 1]
    bad = [s for s, y in zip(scores, labels, strict=True) if y == 0]
    if not good or not bad:
        return None
    # Ranks with ties averaged (Mann-Whitney U).
    ordered = sorted(scores)
    rank: dict[float, float] = {}
    i = 0
    while i < len(ordered):
        j = i
        while j < len(ordered) and ordered[j] == ordered[i]:
            j += 1
        rank[ordered[i]] = (i + j + 1) / 2  # mean of ranks i+1 .. j
        i = j
    u = sum(rank[s] for s in good) - len(good) * (len(good) + 1) / 2
    return u / (len(good) * len(bad))


class ScoreGroup(TypedDict):
    """A group of responses (a label, a defect): how many, their mean score (None for none), the
    count of each score 1..5 (as JSON keys) and how many fall below the threshold."""

    n: int
    mean: float | None
    scores: dict[str, int]
    dropped: int


class ByLabel(TypedDict):
    good: ScoreGroup
    bad: ScoreGroup


class CalibrationReport(TypedDict):
    """How well a judge's scores separate good responses from bad (`synth judge-check` prints it
    and writes it as JSON; a dataset's card shows it). `source`: the labelled set, added by the
    caller; `judge_model` and `judge_rubric`: added by the run that graded."""

    responses: int
    unparseable: int
    threshold: int
    auc: float | None
    agreement: float | None
    by_label: ByLabel
    by_defect: dict[str, ScoreGroup]
    judge_model: NotRequired[str]
    judge_rubric: NotRequired[str]
    source: NotRequired[str]


def report(items: Sequence[Labelled], scores: Sequence[int | None], threshold: int) -> CalibrationReport:
    """The calibration figures (see the module's docstring) of `scores` against `items`' labels."""
    graded = [(i, s) for i, s in zip(items, scores, strict=True) if s is not None]
    labels = [i.label for i, _ in graded]
    values = [float(s) for _, s in graded]
    agree = sum((s >= threshold) == (i.label == 1) for i, s in graded)

    def group(members: list[tuple[Labelled, int]]) -> ScoreGroup:
        counts = Counter(s for _, s in members)
        return {
            "n": len(members),
            "mean": round(sum(s for _, s in members) / len(members), 3) if members else None,
            "scores": {str(k): counts.get(k, 0) for k in range(1, 6)},
            "dropped": sum(s < threshold for _, s in members),
        }

    kinds = sorted({i.defect or "unspecified" for i, _ in graded if i.label == 0})
    auc = roc_auc(values, labels)
    return {
        "responses": len(items),
        "unparseable": len(items) - len(graded),
        "threshold": threshold,
        "auc": None if auc is None else round(auc, 4),
        "agreement": round(agree / len(graded), 4) if graded else None,
        "by_label": {
            "good": group([(i, s) for i, s in graded if i.label == 1]),
            "bad": group([(i, s) for i, s in graded if i.label == 0]),
        },
        "by_defect": {
            kind: group([(i, s) for i, s in graded if i.label == 0 and (i.defect or "unspecified") == kind])
            for kind in kinds
        },
    }
