"""Validated configuration: which engine runs the model, and how each generator behaves.

Configs are data: they validate, serialize into the manifest, and hash into a run id. Moving from
the embedded model on a laptop to a GPU server is a change of `EngineConfig` only.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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


def _sampling(*, description: str | None = None, **settings: Any) -> Any:
    """A config's sampling field whose default is `settings` (a new `SamplingConfig` for each config)."""
    return Field(default_factory=lambda: SamplingConfig(**settings), description=description)


def _language() -> Any:
    return Field(
        default="en",
        pattern=r"^[a-z]{2,3}$",
        description="The language the run writes in (ISO 639-1, e.g. en, zh): picks the default seeds and the "
        "prompt templates, and what the language checks expect.",
    )


_STALLS = "no budget; the run ends at its target, or early only when it stalls (10 batches in a row keep no record)."


def _max_batches(unset: str | None = _STALLS) -> Any:
    """A run's budget of batches (unset: none); `unset` says when a run without one ends."""
    description = "Budget: stop after this many batches." + (f" Unset: {unset}" if unset else "")
    return Field(default=None, ge=1, description=description)


def _identity(config: BaseModel, exclude: set[str]) -> dict[str, Any]:
    """`config` as it enters a run id, without `exclude`; English, the default language, is left
    out so that runs started before the language setting existed keep their ids."""
    data = config.model_dump(exclude=exclude)
    if data.get("language") == "en":
        del data["language"]
    return data


Profile = Literal["paper", "small-model"]
PROFILES: tuple[str, ...] = ("paper", "small-model")


class _RunConfig(_Strict):
    """A generator config: the files it reads and what of it defines a run.

    `_INPUT_FIELDS` name the fields that hold a path the run reads (checked when a recipe loads);
    the run id hashes those files' content, not their path, so these fields stay out of the
    config's identity, and so do the `_IDENTITY_EXCLUDES` (a larger target, say, extends a run
    instead of starting a new one)."""

    _INPUT_FIELDS: ClassVar[tuple[str, ...]] = ()
    _IDENTITY_EXCLUDES: ClassVar[frozenset[str]] = frozenset()

    def input_paths(self) -> dict[str, str | None]:
        """The files this config reads, by key (checked when a recipe loads)."""
        return {name: getattr(self, name) for name in self._INPUT_FIELDS}

    def identity(self) -> dict[str, Any]:
        """What defines a run's output: everything but the input files' paths and the `_IDENTITY_EXCLUDES`."""
        return _identity(self, {*self._INPUT_FIELDS, *self._IDENTITY_EXCLUDES})


class _Profiled(_RunConfig):
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
    # "auto": the model's own, except on a CPU without bfloat16 instructions, where it is float32
    # (emulated bfloat16 decodes far slower; see `synth.engines.vllm_local.cpu_dtype`).
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    max_model_len: int = Field(default=2048, gt=0)
    tensor_parallel_size: int = Field(default=1, ge=1)
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    # None: eager on CPU (compiling costs over a minute there and gains nothing), compiled on GPU.
    enforce_eager: bool | None = None
    cpu_kvcache_gib: int = Field(default=4, ge=1)
    # Where vLLM's engine core runs: in a process of its own (the default, vLLM's: the model works
    # while this process curates and commits), or in this process (True: on a CPU it loads in about
    # half the time, 16 s against 34 s measured here, but the runner's own work then competes with
    # it; benchmark answers, a loop with nothing beside it, run so). One engine core at a time runs
    # in a process; a second asking for it gets a process of its own.
    in_process: bool = False
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    seed: int = 0


class OpenAIServer(_Strict):
    """How to reach an OpenAI-compatible server: the model it serves, its URL, the environment
    variable holding the API key, and each request's timeout and retries (with exponential backoff).
    The chat engine's and the embedding engine's configs share these."""

    model: str
    base_url: str = "http://127.0.0.1:8000/v1"
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=4, ge=0)
    backoff_s: float = Field(default=1.0, ge=0)


class OpenAIEngineConfig(OpenAIServer):
    """Any OpenAI-compatible chat server (`vllm serve`, or another compatible one)."""

    kind: Literal["openai"] = "openai"
    max_concurrency: int = Field(default=16, ge=1)
    tokenizer: str | None = Field(
        default=None,
        description="A local tokenizer folder of the served model: its chat template renders raw prompts (Magpie).",
    )
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


class SelfInstructConfig(_Profiled):
    """Self-Instruct (Wang et al. 2022): grow new tasks and their instances from seed tasks.

    The defaults (`profile: paper`) follow the paper and its reference code; `small-model` holds
    what the small embedded model needs (see docs/generators/self-instruct.md, "Where we differ from the paper")."""

    _INPUT_FIELDS = ("seeds",)
    # Raising `--num` on the same command extends the run instead of starting a new one; the seed
    # tasks' own instances are a run of their own.
    _IDENTITY_EXCLUDES = frozenset({"num_records", "max_batches", "include_seed_tasks"})

    _PROFILE_DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = {
        "small-model": {
            "max_new_tasks_per_prompt": 8,
            "instances_per_task": 1,
            "task_sampling": {"temperature": 0.7, "top_p": 0.5, "max_tokens": 512, "presence_penalty": 1.0},
            "instance_sampling": {"temperature": 0.0, "top_p": 1.0, "max_tokens": 384},
            "length_cut": "last_task",
            "classify_question": "open-ended",
            "instance_demos": "seeds",
            "extra_non_text_keywords": True,
        }
    }

    seeds: str | None = Field(
        default=None,
        description="Seed tasks: a Self-Instruct release JSONL, a JSONL of instructions, or a .txt file with one "
        "per line; empty: the built-in set of the language.",
    )
    language: str = _language()
    num_records: int = Field(default=100, ge=1, description="Stop once this many records (instances) are kept.")
    max_batches: int | None = _max_batches()
    prompts_per_batch: int = Field(default=16, ge=1, description="Task-generation prompts per batch.")
    num_seed_demos: int = Field(
        default=6, ge=0, description="In-context tasks per prompt drawn from the seed tasks (the paper: 6 of 8)."
    )
    num_machine_demos: int = Field(
        default=2, ge=0, description="In-context tasks per prompt drawn from the tasks generated so far (2 of 8)."
    )
    max_new_tasks_per_prompt: int = Field(
        default=7, ge=1, description="The paper's list of 8 in-context tasks stops before task 16: 7 new ones."
    )
    instances_per_task: int = Field(default=5, ge=1, description="The paper keeps at most 5 instances per task.")
    rouge_threshold: float = Field(
        default=0.7, ge=0, le=1, description="A new task whose ROUGE-L with any pool task is above this is a reject."
    )
    neighbors_kept: int = Field(default=10, ge=0, description="Most similar pool tasks stored with each new task.")
    min_words: int = Field(default=3, ge=0, description="A task of this many words or fewer is a reject.")
    max_words: int = Field(default=150, ge=1, description="A task of more words than this is a reject.")
    extra_non_text_keywords: bool = Field(
        default=False,
        description="Also drop tasks naming video, audio, music, flowcharts or diagrams (the paper's list "
        "names images, graphs, pictures, files, maps, drawing, plotting and 'go to').",
    )
    length_cut: Literal["reply", "last_task"] = Field(
        default="reply",
        description="A task-list reply cut off at the token limit: 'reply' drops all of it (the reference "
        "code), 'last_task' only its unfinished last task.",
    )
    classify_question: Literal["classification", "open-ended"] = Field(
        default="classification",
        description="'classification': asked as the paper asks, with a balanced few-shot list of our own; "
        "'open-ended': the inverted question with examples from the seeds (which the small embedded model "
        "answers better).",
    )
    instance_demos: Literal["template", "seeds"] = Field(
        default="template",
        description="In-context examples of instance generation: 'template' shows several examples per task "
        "(as the paper's prompts do); 'seeds' shows one instance of two seed tasks.",
    )
    task_sampling: SamplingConfig = _sampling(temperature=0.7, top_p=0.5, max_tokens=1024, presence_penalty=2.0)
    classify_sampling: SamplingConfig = _sampling(temperature=0.0, top_p=1.0, max_tokens=3)
    instance_sampling: SamplingConfig = _sampling(temperature=0.0, top_p=1.0, max_tokens=350, presence_penalty=1.5)
    include_seed_tasks: bool = Field(
        default=True,
        description="Write the seed tasks' own instances into the dataset too, as a run of their own tagged "
        "seed-data (the paper's training data holds them beside the generated tasks).",
    )
    seed: int = Field(default=0, description="Run seed (sampling of in-context tasks and of the model).")


EVOL_OPERATIONS = ("add_constraints", "deepen", "concretize", "increase_reasoning", "complicate_input", "breadth")


class EvolInstructConfig(_Profiled):
    """Evol-Instruct (Xu et al. 2023): rounds of in-depth and in-breadth evolution with elimination.

    The defaults are the paper's and its reference code's (profile `paper`); `small-model` keeps
    the settings the small embedded model needs. Deviations are listed in docs/generators/evol-instruct.md."""

    _INPUT_FIELDS = ("source",)

    _PROFILE_DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = {
        "small-model": {
            # A 135M model rambles at temperature 1 and rarely stops before 2048 tokens.
            "evolve_sampling": {"temperature": 0.7, "top_p": 0.95, "max_tokens": 384},
            "response_sampling": {"temperature": 0.7, "top_p": 0.95, "max_tokens": 512},
            # Its own chat template's system prompt (SmolLM2 adds one when none is given).
            "system_prompt": "",
            # It talks about the task before the rewrite, and goes on to write another prompt.
            "prefill_evolution": True,
            # It refuses and leaks the prompt's words in more ways than "sorry" and "given prompt".
            "extra_eliminations": True,
        }
    }

    source: str = Field(
        description="Instructions to evolve: a dataset directory, or a JSONL, JSON array (Alpaca format), Parquet "
        "or .txt file, or a seed file."
    )
    language: str = _language()
    rounds: int = Field(default=4, ge=1, description="Rounds of evolution.")
    chunk_size: int = Field(default=256, ge=1, description="Source instructions per committed batch.")
    limit: int | None = Field(default=None, ge=1, description="Evolve only the first N source instructions.")
    operation_weights: dict[str, float] = Field(default_factory=lambda: dict.fromkeys(EVOL_OPERATIONS, 1.0))
    include_source: bool = Field(
        default=True,
        description="Write the source instructions too, as round 0 (the training mix is the original data "
        "plus every evolved round); a source without an output gets one from the model.",
    )
    system_prompt: str = Field(
        default="You are a helpful assistant.",
        description="System message of every request; empty: none (the model's chat template decides).",
    )
    prefill_evolution: bool = Field(
        default=False,
        description="Open the model's rewrite with the prompt's answer label and stop it at the next label.",
    )
    extra_eliminations: bool = Field(
        default=False,
        description="Eliminate on more refusal phrases and leaked words than the paper's lists.",
    )
    evolve_sampling: SamplingConfig = _sampling(temperature=1.0, top_p=0.95, max_tokens=2048)
    judge_sampling: SamplingConfig = _sampling(temperature=0.0, top_p=1.0, max_tokens=16)
    response_sampling: SamplingConfig = _sampling(temperature=1.0, top_p=0.95, max_tokens=2048)
    seed: int = Field(default=0, description="Run seed (choice of operations and the model's sampling).")

    @field_validator("operation_weights")
    @classmethod
    def _known_operations(cls, weights: dict[str, float]) -> dict[str, float]:
        unknown = set(weights) - set(EVOL_OPERATIONS)
        if unknown:
            raise ValueError(f"unknown operations {sorted(unknown)}; known: {', '.join(EVOL_OPERATIONS)}")
        if any(w < 0 for w in weights.values()) or not any(w > 0 for w in weights.values()):
            raise ValueError("weights must be non-negative with at least one positive")
        return weights


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
