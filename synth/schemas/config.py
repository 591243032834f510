"""Validated configuration: which engine runs the model, and how each generator behaves.

Configs are data: they validate, serialize into the manifest, and hash into a run id. Moving from
the embedded model on a laptop to a GPU server is a change of `EngineConfig` only.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from synth.schemas.records import Sampling


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SamplingConfig(Sampling):
    """Sampling parameters as a config gives them, checked against the ranges vLLM and OpenAI-compatible
    servers accept, so a typo fails when the file loads instead of at the first batch. A plain
    `Sampling` is accepted too (and checked); the fields, and so run ids, are those of `Sampling`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    temperature: float = Field(default=0.7, ge=0)
    top_p: float = Field(default=0.95, gt=0, le=1)
    max_tokens: int = Field(default=512, ge=1)
    presence_penalty: float = Field(default=0.0, ge=-2, le=2)
    frequency_penalty: float = Field(default=0.0, ge=-2, le=2)
    seed: int | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_sampling(cls, data: Any) -> Any:
        if isinstance(data, Sampling) and not isinstance(data, cls):
            return data.model_dump()
        return data


Profile = Literal["paper", "small-model"]
PROFILES: tuple[str, ...] = ("paper", "small-model")


class _Profiled(_Strict):
    """A generator config whose defaults come from a named profile.

    `paper` (the default) is the method as its paper and reference code run it. Other profiles
    change named defaults (e.g. `small-model`, for what a tiny local model needs); a value the
    user gives explicitly always wins over the profile's."""

    # Per profile, the defaults it changes (the class's own defaults are the paper's).
    _PROFILE_DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = {}

    profile: Profile = Field(
        default="paper",
        description="'paper': the published method's settings. 'small-model': what the small embedded model needs.",
    )

    @model_validator(mode="before")
    @classmethod
    def _profile_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict):
            overrides = cls._PROFILE_DEFAULTS.get(data.get("profile", "paper"), {})
            return {**overrides, **data}
        return data

    @classmethod
    def profile_changes(cls, profile: str) -> dict[str, Any]:
        """The defaults `profile` changes, as a config file would spell them."""
        return dict(cls._PROFILE_DEFAULTS.get(profile, {}))


class VLLMEngineConfig(_Strict):
    """In-process vLLM: the whole batch goes to one `LLM.chat` call.

    `model` is a local folder or a model name vLLM can load; left empty it is the embedded
    default model (SmolLM2-135M-Instruct), converted once into a local cache.
    """

    kind: Literal["vllm"] = "vllm"
    model: str | None = None
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    max_model_len: int = Field(default=2048, gt=0)
    tensor_parallel_size: int = Field(default=1, ge=1)
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    # None: eager on CPU (compiling costs over a minute there and gains nothing), compiled on GPU.
    enforce_eager: bool | None = None
    cpu_kvcache_gib: int = Field(default=4, ge=1)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    seed: int = 0


class OpenAIEngineConfig(_Strict):
    """Any OpenAI-compatible chat server (`vllm serve`, or another compatible one)."""

    kind: Literal["openai"] = "openai"
    model: str
    base_url: str = "http://127.0.0.1:8000/v1"
    api_key_env: str = "OPENAI_API_KEY"
    max_concurrency: int = Field(default=16, ge=1)
    timeout_s: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=4, ge=0)
    backoff_s: float = Field(default=1.0, ge=0)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    seed: int = 0


class ScriptedEngineConfig(_Strict):
    """Replays scripted replies; for tests and dry runs of a pipeline's plumbing."""

    kind: Literal["scripted"] = "scripted"
    model: str = "scripted"
    responder: str | None = Field(
        default=None,
        description="'module:attribute' of a callable that makes the responder (called with no arguments); "
        "default: echo the last message. This is how processes that build their own engine, such as Ray "
        "workers, get a script.",
    )
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    seed: int = 0

    @field_validator("responder")
    @classmethod
    def _module_and_attribute(cls, value: str | None) -> str | None:
        if value is None:
            return value
        module, sep, attribute = value.partition(":")
        dotted = all(part.isidentifier() for part in module.split("."))
        if not sep or not dotted or not attribute.isidentifier():
            raise ValueError(f"expected 'module:attribute' (e.g. 'mypkg.scripts:make'), got {value!r}")
        return value


EngineConfig = Annotated[VLLMEngineConfig | OpenAIEngineConfig | ScriptedEngineConfig, Field(discriminator="kind")]


class EngineSettings(_Strict):
    """Wrapper so an engine config file validates on its own."""

    engine: EngineConfig = Field(default_factory=VLLMEngineConfig)


class SelfInstructConfig(_Strict):
    """Self-Instruct (Wang et al. 2022) as the paper runs it; defaults follow the paper."""

    seeds: str | None = Field(default=None, description="Seed file; empty for the built-in set.")
    num_records: int = Field(default=100, ge=1, description="Stop once this many records are kept.")
    max_batches: int = Field(default=50, ge=1, description="Budget: stop after this many batches.")
    prompts_per_batch: int = Field(default=16, ge=1)
    num_seed_demos: int = Field(default=6, ge=0)
    num_machine_demos: int = Field(default=2, ge=0)
    max_new_tasks_per_prompt: int = Field(default=8, ge=1)
    instances_per_task: int = Field(default=1, ge=1)
    rouge_threshold: float = Field(default=0.7, ge=0, le=1)
    neighbors_kept: int = Field(default=10, ge=0)
    min_words: int = 3
    max_words: int = 150
    task_sampling: SamplingConfig = Field(
        default_factory=lambda: SamplingConfig(temperature=0.7, top_p=0.5, max_tokens=512, presence_penalty=1.0)
    )
    classify_sampling: SamplingConfig = Field(
        default_factory=lambda: SamplingConfig(temperature=0.0, top_p=1.0, max_tokens=3)
    )
    instance_sampling: SamplingConfig = Field(
        default_factory=lambda: SamplingConfig(temperature=0.0, top_p=1.0, max_tokens=384)
    )
    seed: int = 0

    def identity(self) -> dict[str, Any]:
        """The fields that define what a run produces; the target size and budget are left out
        so that raising `--num` on the same command extends the run instead of starting a new one; the
        seed file is identified by its content, not its path."""
        return self.model_dump(exclude={"num_records", "max_batches", "seeds"})


EVOL_OPERATIONS = ("add_constraints", "deepen", "concretize", "increase_reasoning", "complicate_input", "breadth")


class EvolInstructConfig(_Strict):
    """Evol-Instruct (Xu et al. 2023): rounds of in-depth and in-breadth evolution with elimination."""

    source: str = Field(description="Dataset directory, JSONL/Parquet file with an instruction column, or seed file.")
    rounds: int = Field(default=4, ge=1)
    chunk_size: int = Field(default=256, ge=1, description="Source instructions per committed batch.")
    limit: int | None = Field(default=None, ge=1, description="Evolve only the first N source instructions.")
    operation_weights: dict[str, float] = Field(default_factory=lambda: dict.fromkeys(EVOL_OPERATIONS, 1.0))
    evolve_sampling: SamplingConfig = Field(
        default_factory=lambda: SamplingConfig(temperature=0.7, top_p=0.95, max_tokens=384)
    )
    judge_sampling: SamplingConfig = Field(
        default_factory=lambda: SamplingConfig(temperature=0.0, top_p=1.0, max_tokens=16)
    )
    response_sampling: SamplingConfig = Field(
        default_factory=lambda: SamplingConfig(temperature=0.7, top_p=0.95, max_tokens=512)
    )
    seed: int = 0

    @field_validator("operation_weights")
    @classmethod
    def _known_operations(cls, weights: dict[str, float]) -> dict[str, float]:
        unknown = set(weights) - set(EVOL_OPERATIONS)
        if unknown:
            raise ValueError(f"unknown operations {sorted(unknown)}; known: {', '.join(EVOL_OPERATIONS)}")
        if any(w < 0 for w in weights.values()) or not any(w > 0 for w in weights.values()):
            raise ValueError("weights must be non-negative with at least one positive")
        return weights

    def identity(self) -> dict[str, Any]:
        """What defines a run's output: everything but the source path (its content is hashed)."""
        return self.model_dump(exclude={"source"})


class BacktranslationConfig(_Strict):
    """Instruction backtranslation (Li et al. 2023, Humpback): segment, self-augment, self-curate."""

    docs: str = Field(description="Folder of .txt/.md/.html files, or a JSONL/Parquet file with a text field.")
    text_field: str = "text"
    min_chars: int = Field(default=120, ge=1)
    max_chars: int = Field(default=2000, ge=1)
    max_short_line_share: float = Field(default=0.5, ge=0, le=1)
    max_upper_share: float = Field(default=0.4, ge=0, le=1)
    max_symbol_share: float = Field(default=0.25, ge=0, le=1)
    max_link_share: float = Field(default=0.5, ge=0, le=1)
    rounds: int = Field(default=1, ge=1, description="Iterations; curated pairs join the next round's few-shot pool.")
    min_score: int = Field(
        default=5, ge=1, le=5, description="Keep pairs graded at least this (4 is the permissive option)."
    )
    num_demos: int = Field(default=3, ge=0, description="Few-shot (output, instruction) pairs per backward prompt.")
    chunk_size: int = Field(default=128, ge=1, description="Segments per committed batch.")
    max_segments: int | None = Field(default=None, ge=1, description="Use only the first N segments.")
    augment_sampling: SamplingConfig = Field(
        default_factory=lambda: SamplingConfig(temperature=0.7, top_p=0.95, max_tokens=128)
    )
    grade_sampling: SamplingConfig = Field(
        default_factory=lambda: SamplingConfig(temperature=0.0, top_p=1.0, max_tokens=256)
    )
    seed: int = 0

    def identity(self) -> dict[str, Any]:
        return self.model_dump(exclude={"docs"})


class DatasetConfig(_Strict):
    """Where and how shards are written."""

    path: str
    shard_rows: int = Field(default=10_000, ge=1)
    wait: float | None = Field(
        default=0,
        ge=0,
        description="Seconds to wait for another writer of the dataset to finish (0: fail at once "
        "naming it; null: wait as long as it takes).",
    )


def run_id(*parts: Any) -> str:
    """A short stable id for a run: a hash of what defines it."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


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
