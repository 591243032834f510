"""A recipe: one file that describes a whole pipeline (steps, engine, dataset, schedule)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from synth.schemas.config import (
    BacktranslationConfig,
    ConfigFileError,
    DatasetConfig,
    EngineConfig,
    EvolInstructConfig,
    SelfInstructConfig,
    VLLMEngineConfig,
    _Strict,
    load_config_file,
)
from synth.schemas.curation import CurationConfig


class SelfInstructStep(SelfInstructConfig):
    generator: Literal["self_instruct"]


class EvolInstructStep(EvolInstructConfig):
    generator: Literal["evol_instruct"]


class BacktranslationStep(BacktranslationConfig):
    generator: Literal["backtranslation"]


Step = Annotated[SelfInstructStep | EvolInstructStep | BacktranslationStep, Field(discriminator="generator")]


class Schedule(_Strict):
    """When a served recipe runs: a cron expression or an interval (one of the two)."""

    cron: str | None = None
    interval_seconds: int | None = Field(default=None, ge=1)
    timezone: str = "UTC"

    @model_validator(mode="after")
    def _one_of(self) -> Schedule:
        if (self.cron is None) == (self.interval_seconds is None):
            raise ValueError("give exactly one of 'cron' or 'interval_seconds'")
        return self


class Recipe(_Strict):
    """Steps run in order into one dataset, on one engine. Paths are relative to where `synth` runs."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    dataset: DatasetConfig
    engine: EngineConfig = Field(default_factory=VLLMEngineConfig)
    curation: CurationConfig = Field(default_factory=CurationConfig)
    steps: list[Step] = Field(min_length=1)
    schedule: Schedule | None = None


def _inputs(step: Step) -> list[tuple[str, str | None]]:
    if isinstance(step, SelfInstructStep):
        return [("seeds", step.seeds)]
    if isinstance(step, EvolInstructStep):
        return [("source", step.source)]
    return [("docs", step.docs)]


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe; errors name the file and the key, including missing inputs.

    An Evol-Instruct step whose source is the recipe's own dataset may name it before it exists.
    """
    recipe = load_config_file(path, Recipe)
    assert isinstance(recipe, Recipe)
    own = Path(recipe.dataset.path).resolve()
    for i, step in enumerate(recipe.steps):
        for key, value in _inputs(step):
            if value is None or Path(value).exists() or Path(value).resolve() == own:
                continue
            raise ConfigFileError(f"{path}: steps.{i}.{key}: {value} does not exist")
    return recipe
