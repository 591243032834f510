"""The generators, by name: each one's config, its flow, and how it runs on a Ray cluster.

The recipe runner and `synth generate` read this table (the recipe schema builds its steps from
the configs); adding a generator is one entry here. See the README's "Adding a generator".
Flows are looked up by name when called, so reading the table imports no flow (nor Prefect).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from synth.schemas import BacktranslationConfig, EvolInstructConfig, SelfInstructConfig
from synth.schemas.magpie import MagpieConfig
from synth.schemas.preferences import PreferencesConfig


@dataclass(frozen=True)
class Generator:
    """One generator: its name (as records, recipes and the manifest spell it), its config, the
    Prefect flow that runs it (config, dataset, engine, curation), the check of its inputs
    (config, dataset path: reads its seeds or sources and fails naming the file and line, before
    any model loads), and, if its batches can run on Ray workers, the function that runs it there
    (config, engine, dataset, curation, runner); each as "module:attribute"."""

    name: str
    config: type[BaseModel]
    flow_path: str
    inputs_path: str
    on_ray_path: str | None = None

    @property
    def check_inputs(self) -> Callable[[Any, str | Path], None]:
        return _load(self.inputs_path)

    @property
    def flow(self) -> Callable[..., dict[str, Any]]:
        return _load(self.flow_path)

    @property
    def on_ray(self) -> Callable[..., dict[str, Any]] | None:
        return _load(self.on_ray_path) if self.on_ray_path else None


def _load(path: str) -> Any:
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)


GENERATORS: dict[str, Generator] = {
    g.name: g
    for g in (
        Generator(
            "self_instruct",
            SelfInstructConfig,
            "synth.flows.self_instruct:self_instruct_flow",
            "synth.flows.self_instruct:check_inputs",
            "synth.flows.scaleout:run_self_instruct_on_ray",
        ),
        Generator(
            "evol_instruct",
            EvolInstructConfig,
            "synth.flows.evol_instruct:evol_instruct_flow",
            "synth.flows.evol_instruct:check_inputs",
            "synth.flows.scaleout:run_evol_instruct_on_ray",
        ),
        Generator(
            "backtranslation",
            BacktranslationConfig,
            "synth.flows.self_training:backtranslation_flow",
            "synth.flows.backtranslation:check_inputs",
        ),
        Generator("magpie", MagpieConfig, "synth.flows.magpie:magpie_flow", "synth.flows.magpie:check_inputs"),
        Generator(
            "preferences",
            PreferencesConfig,
            "synth.flows.preferences:preferences_flow",
            "synth.flows.preferences:check_inputs",
        ),
    )
}
