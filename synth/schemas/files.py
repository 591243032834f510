"""Config files: TOML, YAML or JSON read into a config model, with errors that name the file and
the key as the file spells it."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from synth.schemas.config import EngineSettings


class ConfigFileError(ValueError):
    """A config file that cannot be read or does not validate; the message names the file."""


def load_config_file(path: str | Path, model: type[BaseModel]) -> BaseModel:
    """Read a TOML, YAML or JSON file into `model`, with errors that name the file and the key."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigFileError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise ConfigFileError(f"{p}: is a folder; expected a config file") from None
    except PermissionError:
        raise ConfigFileError(f"{p}: cannot read it (permission denied)") from None
    except OSError as e:
        raise ConfigFileError(f"{p}: cannot read it ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise ConfigFileError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        suffix = p.suffix.lower()
        if suffix == ".toml":
            data = tomllib.loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            data = yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, yaml.YAMLError) as e:
        raise ConfigFileError(f"{p}: cannot parse: {e}") from None
    if not isinstance(data, dict):
        raise ConfigFileError(f"{p}: expected a mapping at the top level")
    # An engine file may hold the engine table alone.
    bare = model is EngineSettings and "engine" not in data
    if bare:
        data = {"engine": data}
    try:
        return model.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(describe_error(err, data, skip=1 if bare else 0) for err in e.errors())
        raise ConfigFileError(f"{p}: {problems}") from None


def describe_error(err: Any, data: Any, skip: int = 0) -> str:
    """One pydantic error as `key.path: message (got value)`, the path as the file spells it: the
    tags pydantic puts in the path of a tagged union (`engine.scripted.sampling`) are left out, and
    so are the first `skip` keys (a wrapper the file does not have)."""
    keys: list[str] = []
    node = data
    loc = list(err["loc"])
    for i, part in enumerate(loc):
        present = part in node if isinstance(node, dict) else isinstance(part, int) and 0 <= part < len(node or ())
        if present and isinstance(node, dict | list):
            node = node[part]
        elif i == len(loc) - 1 and err["type"] == "missing":
            pass  # the key the message is about, absent from the mapping
        else:
            continue  # a union tag: not a key of the file
        keys.append(str(part))
    message = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] not in {"missing", "extra_forbidden"} and not message.startswith(("unknown", "expected")):
        value = err.get("input")
        shown = isinstance(value, str) and repr(value) in message
        if isinstance(value, str | int | float | bool) and len(repr(value)) <= 80 and not shown:
            message += f" (got {value!r})"
    return f"{'.'.join(keys[skip:]) or '(top)'}: {message}"
