"""Prompt templates: text files in this package, each with a name and a content hash, shared by the
generators and the model-judged filters (which sit below the generators).

Placeholders are `{{name}}`. Rendering is a single pass, so text put into a template (seed tasks,
model output, document text) is never scanned for placeholders itself.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

_DIR = Path(__file__).parent
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
# Strings that open or close chat turns in common templates, and our own fence markers.
_CONTROL = re.compile(r"<\|[^|>]{0,40}\|>|</?s>|\[/?INST\]|<</?SYS>>|\[TEXT (START|END)\]", re.IGNORECASE)


def defuse(text: str) -> str:
    """Untrusted text made safe to place inside a prompt: chat-control markers and our fence
    markers are broken up so they read as text and cannot end the fence or start a turn."""
    return _CONTROL.sub(
        lambda m: m.group(0).replace("<", "‹").replace(">", "›").replace("[", "(").replace("]", ")"), text
    )


@dataclass(frozen=True)
class Template:
    name: str
    text: str

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()[:12]

    @property
    def fields(self) -> set[str]:
        return set(_PLACEHOLDER.findall(self.text))

    def render(self, **values: object) -> str:
        missing = self.fields - values.keys()
        if missing:
            raise KeyError(f"template {self.name} needs {sorted(missing)}")
        return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), self.text)


class TemplateError(LookupError):
    """No template of that name for that language; the message names the file it looked for."""


def languages() -> list[str]:
    """The languages with prompt templates: English (this folder) and one subfolder per language."""
    return ["en", *sorted(p.name for p in _DIR.iterdir() if p.is_dir() and not p.name.startswith("_"))]


@cache
def load_template(name: str, language: str = "en") -> Template:
    """The template `{name}.txt` of this package, or of its `{language}/` folder for a language
    other than English (named `{language}/{name}` then, so records say which one wrote them)."""
    folder, shown = (_DIR, name) if language == "en" else (_DIR / language, f"{language}/{name}")
    path = folder / f"{name}.txt"
    if not path.is_file():
        raise TemplateError(f"no {language!r} prompt template {name!r} ({path}); languages: {', '.join(languages())}")
    return Template(name=shown, text=path.read_text(encoding="utf-8").strip())


@dataclass(frozen=True)
class TemplateSet:
    """A generator's prompt templates, named once: the generator loads them from here and its run
    id hashes all of them, in this order, so a changed prompt always starts a new run."""

    names: tuple[str, ...]

    def load(self, language: str = "en") -> dict[str, Template]:
        return {name: load_template(name, language) for name in self.names}

    def hashes(self, language: str = "en") -> list[str]:
        return [template.hash for template in self.load(language).values()]


def reply_object(text: str) -> dict | None:
    """The JSON object a model's reply holds (structured output), or None if it holds none."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None
