"""Ability tags: which ability each record exercises, from a taxonomy, decided by the model; and
a mixture: how many kept records each ability may have.

The default taxonomy follows the ten abilities of the DoIT study of instruction tuning (creative
writing, code generation, logical reasoning, mathematics, role-play, ethics, brainstorming, closed
and open QA, information extraction); names and definitions are ours, and a file of
`{key: definition}` replaces them. One batched engine call per batch, with structured output (the
reply must be one of the keys). A reply that names no key is a reject with its raw text; a record
is never left untagged silently.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

from synth.engines import ChatRequest, Engine
from synth.filters.base import reject
from synth.prompts import defuse, load_template, reply_object
from synth.schemas import Message, Outcome, Record
from synth.schemas.curation import AbilitiesConfig
from synth.schemas.files import ConfigFileError
from synth.shards.files import checked_text
from synth.text import value_control_problem

ABILITIES: dict[str, str] = {
    "creative_writing": "stories, poems, slogans, scripts and other original writing",
    "code_generation": "writing, completing, fixing or explaining program code",
    "logical_reasoning": "puzzles, deductions and multi-step reasoning that need no arithmetic",
    "mathematics": "arithmetic, algebra, word problems and other calculation",
    "role_play": "answering as a character, persona or in a given role",
    "ethics": "moral questions, safety, fairness and how to act rightly",
    "brainstorming": "listing ideas, options, names or suggestions",
    "closed_qa": "answering a question from a text that the task gives",
    "open_qa": "answering a question from general knowledge",
    "information_extraction": "pulling names, facts, fields or structure out of a given text",
}


def load_taxonomy(path: str | None) -> dict[str, str]:
    """The taxonomy of `path` (a JSON or YAML mapping of key to definition), or the default. A file
    that cannot be read as one raises `ConfigFileError` naming it (and the line, where known)."""
    if path is None:
        return dict(ABILITIES)
    # Line by line first: a BOM dropped, bad bytes and control characters refused with file:LINE.
    text = checked_text(Path(path), ConfigFileError)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigFileError(f"{path}{where}: not valid JSON or YAML ({getattr(e, 'problem', None) or e})") from None
    if not isinstance(data, dict) or not data or not all(isinstance(k, str) and k for k in data):
        raise ConfigFileError(f"{path}: expected a mapping of ability key to definition")
    taxonomy = {k: str(v) for k, v in data.items()}
    if problem := value_control_problem(taxonomy):  # an escape in a quoted string ("\e")
        raise ConfigFileError(f"{path}: a definition holds a {problem}; only text, tabs and line breaks are read")
    return taxonomy


def parse_ability(text: str, keys: Sequence[str]) -> str | None:
    """The key a reply names: the JSON form first, else the only key that appears in the text."""
    if (data := reply_object(text)) is not None:
        value = data.get("ability")
        return value if isinstance(value, str) and value in keys else None
    found = {k for k in keys if re.search(rf"(?<![\w]){re.escape(k)}(?![\w])", text)}
    return found.pop() if len(found) == 1 else None


class AbilityTagger:
    """Fills each record's `ability`; a record the model cannot tag becomes a reject."""

    stage = "ability"

    def __init__(self, config: AbilitiesConfig, engine: Engine, language: str = "en") -> None:
        self.config = config
        self.engine = engine
        self.taxonomy = load_taxonomy(config.taxonomy)
        self.template = load_template("ability_tag", language)
        self.listing = "\n".join(f"- {key}: {definition}" for key, definition in self.taxonomy.items())
        self.schema = {
            "type": "object",
            "properties": {"ability": {"type": "string", "enum": list(self.taxonomy)}},
            "required": ["ability"],
            "additionalProperties": False,
        }

    def request(self, r: Record) -> ChatRequest:
        shown = f"{r.instruction}\n\n{r.input}" if r.input else r.instruction
        prompt = self.template.render(taxonomy=self.listing, instruction=defuse(shown))
        return ChatRequest(
            messages=[Message(role="user", content=prompt)],
            sampling=self.config.sampling,
            json_schema=self.schema,
            tag="ability",
        )

    def apply(self, records: Sequence[Record]) -> Outcome:
        result = Outcome()
        if not records:
            return result
        replies = self.engine.chat([self.request(r) for r in records])
        keys = list(self.taxonomy)
        for r, reply in zip(records, replies, strict=True):
            ability = None if reply.finish_reason == "error" else parse_ability(reply.text, keys)
            if ability is None:
                reason = "engine error" if reply.finish_reason == "error" else "unparseable ability tag"
                result.rejects.append(reject(r, self.stage, reason, detail=reply.error or "", raw=reply.text))
                continue
            r.ability = ability
            result.kept.append(r)
        return result


class MixtureFilter:
    """Keeps records of each ability up to its target (`{ability: count}`), counting the dataset's
    kept records (`counts`) and what earlier records of the batch took; the rest are rejects of
    stage `mixture`. Stateful: a batch's records count once it commits."""

    stage = "mixture"

    def __init__(self, targets: Mapping[str, int], counts: Mapping[str, int] | None = None) -> None:
        self.targets = dict(targets)
        self.counts: Counter[str] = Counter(counts or {})
        self._staged: Counter[str] = Counter()

    def apply(self, records: Sequence[Record]) -> Outcome:
        result = Outcome()
        for r in records:
            ability = r.ability or ""
            target = self.targets.get(ability, 0)
            if ability not in self.targets:
                result.rejects.append(reject(r, self.stage, f"{ability or 'untagged'} is not in the mixture"))
            elif self.counts[ability] + self._staged[ability] >= target:
                result.rejects.append(reject(r, self.stage, f"{ability}: target of {target} met"))
            else:
                self._staged[ability] += 1
                result.kept.append(r)
        return result

    def commit(self) -> None:
        self.counts.update(self._staged)
        self._staged.clear()

    def rollback(self) -> None:
        self._staged.clear()

    def met(self) -> bool:
        """Whether every ability has its target."""
        return all(self.counts[a] >= n for a, n in self.targets.items())
