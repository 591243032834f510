"""Prompt templates: files beside the generators, each with a name and a content hash.

Placeholders are `{{name}}`. Rendering is a single pass, so text put into a template (seed tasks,
model output, document text) is never scanned for placeholders itself.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

_DIR = Path(__file__).parent / "prompts"
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


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


@cache
def load_template(name: str) -> Template:
    """The template `prompts/{name}.txt`."""
    return Template(name=name, text=(_DIR / f"{name}.txt").read_text(encoding="utf-8").strip())
