"""A recipe: one file that describes a whole pipeline (steps, engine, dataset, schedule)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, Field, TypeAdapter, create_model, field_validator, model_validator

from synth.registry import GENERATORS
from synth.schemas.config import DatasetConfig, EngineConfig, VLLMEngineConfig, _Strict
from synth.schemas.curation import CurationConfig
from synth.schemas.files import ConfigFileError, load_config_file


@functools.cache
def _step_type(name: str, config: type[BaseModel]) -> type[BaseModel]:
    """A recipe step of generator `name`: its config plus the `generator` field naming it."""
    tag: Any = Literal[name]
    return create_model(f"{config.__name__.removesuffix('Config')}Step", __base__=config, generator=(tag, ...))


@functools.cache
def _steps_adapter(entries: tuple[tuple[str, str], ...]) -> TypeAdapter[list[Any]]:
    types = tuple(_step_type(name, GENERATORS[name].config) for name, _ in entries)
    step: Any = Annotated[Union[types], Field(discriminator="generator")] if len(types) > 1 else types[0]  # noqa: UP007
    return TypeAdapter(list[step])


def validate_steps(steps: Any) -> list[Any]:
    """Steps as the registry's generators define them: each is its generator's config (a step type
    per registry entry, told apart by its `generator` field)."""
    return _steps_adapter(tuple((g.name, g.config_path) for g in GENERATORS.values())).validate_python(steps)


class Schedule(_Strict):
    """When a served recipe runs: a cron expression or an interval (one of the two)."""

    cron: str | None = None
    interval_seconds: int | None = Field(default=None, ge=1)
    timezone: str = "UTC"

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        if value is None:
            return value
        # Prefect's own cron schedule says what `synth serve` will accept; asked here, when the
        # recipe loads, so a typo fails at once instead of when the recipe is served.
        from prefect.client.schemas.schedules import CronSchedule
        from pydantic import ValidationError

        try:
            CronSchedule(cron=value)
        except ValidationError:
            raise ValueError(
                f"{value!r} is not a valid cron expression (five fields, e.g. '0 3 * * *': every day at 03:00)"
            ) from None
        return value

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as 'UTC' or 'Europe/Paris')") from None
        return value

    @model_validator(mode="after")
    def _one_of(self) -> Schedule:
        if (self.cron is None) == (self.interval_seconds is None):
            raise ValueError("give exactly one of 'cron' or 'interval_seconds'")
        return self


class LocalRunner(_Strict):
    """Batches run one after another in the flow's own process (the default)."""

    kind: Literal["local"] = "local"


class RayRunner(_Strict):
    """Batches run as Prefect tasks on a Ray cluster (prefect-ray), `workers` at a time.

    Each Ray worker process loads the engine once and keeps it for every batch it runs; a batch
    task asks Ray for `num_gpus` and `num_cpus`. Workers curate their batches against one shared
    MinHash index in Redis; the flow commits finished batches to the dataset in order.
    """

    kind: Literal["ray"] = "ray"
    address: str | None = Field(
        default=None,
        description="None starts a Ray instance on this machine; 'auto' joins the one `ray start` runs here; "
        "'ray://HEAD:10001' joins a remote cluster.",
    )
    workers: int = Field(
        default=2,
        ge=1,
        description="Batches in flight at once, for generators whose batches are independent (Evol-Instruct, "
        "preference pairs); the others plan each batch from the run as the one before left it, one at a time.",
    )
    num_gpus: float = Field(default=0, ge=0, description="GPUs per batch task (1 on a GPU cluster).")
    num_cpus: float = Field(default=1, ge=0, description="CPUs per batch task.")
    init_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="More arguments for ray.init (runtime_env, num_cpus, ...)."
    )


Runner = Annotated[LocalRunner | RayRunner, Field(discriminator="kind")]


class Recipe(_Strict):
    """Steps run in order into one dataset, on one engine. Paths are relative to where `synth` runs."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    dataset: DatasetConfig
    engine: EngineConfig = Field(default_factory=VLLMEngineConfig)
    curation: CurationConfig = Field(default_factory=CurationConfig)
    steps: list[Any] = Field(
        min_length=1, description="Each is a generator's config with `generator: NAME` (see `synth generate`)."
    )
    schedule: Schedule | None = None
    runner: Runner = Field(default_factory=LocalRunner)
    gpu_limit: str | None = Field(
        default=None,
        description="A Prefect global concurrency limit every run holds a slot of while its engine is loaded "
        "(default: 'synth-gpu' for a vLLM engine, none otherwise; '' for none), so runs of different recipes "
        "never put two models on one GPU at once. `synth serve` creates it (one slot) if the server has none "
        "of that name. Not used on a Ray runner: Ray schedules GPUs itself.",
    )

    @field_validator("steps", mode="before")
    @classmethod
    def _steps(cls, value: Any) -> list[Any]:
        return validate_steps(value)

    @model_validator(mode="after")
    def _shared_index_on_ray(self) -> Recipe:
        minhash = self.curation.minhash
        if isinstance(self.runner, RayRunner) and minhash.enabled and minhash.backend != "redis":
            raise ValueError(
                "curation.minhash.backend: a Ray runner needs 'redis' (its workers dedupe against one shared "
                "index), or set curation.minhash.enabled: false"
            )
        return self

    def gpu_limit_name(self) -> str | None:
        """The concurrency limit runs of this recipe hold, if any (none on Ray: it schedules GPUs)."""
        if isinstance(self.runner, RayRunner):
            return None
        if self.gpu_limit is not None:
            return self.gpu_limit or None
        return "synth-gpu" if isinstance(self.engine, VLLMEngineConfig) else None


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe; errors name the file and the key, including missing inputs
    and empty paths.

    An Evol-Instruct step whose source is the recipe's own dataset may name it before it exists.
    """
    recipe = load_config_file(path, Recipe)
    assert isinstance(recipe, Recipe)
    # Path("") is the working directory: an empty path would write or read there by accident.
    empty = "an empty path names no file or folder (for this folder, give '.')"
    if not recipe.dataset.path:
        raise ConfigFileError(f"{path}: dataset.path: {empty}")
    own = Path(recipe.dataset.path).resolve()
    for i, step in enumerate(recipe.steps):
        for key, value in getattr(step, "input_paths", dict)().items():
            if value == "":
                raise ConfigFileError(f"{path}: steps.{i}.{key}: {empty}")
            if value is None or Path(value).exists() or Path(value).resolve() == own:
                continue
            raise ConfigFileError(f"{path}: steps.{i}.{key}: {value} does not exist")
    return recipe
