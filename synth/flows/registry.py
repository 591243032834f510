"""The generators, by name: each one's config, its flow, and how it runs on a Ray cluster.

The recipe runner reads this table (the recipe schema builds its steps from the configs in
`synth.schemas.config.GENERATOR_CONFIGS`); adding a generator is one entry here. See the README's
"Adding a generator".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from synth.flows.backtranslation import backtranslation_flow
from synth.flows.evol_instruct import evol_instruct_flow
from synth.flows.scaleout import run_evol_instruct_on_ray, run_self_instruct_on_ray
from synth.flows.self_instruct import self_instruct_flow
from synth.schemas import BacktranslationConfig, EvolInstructConfig, SelfInstructConfig


@dataclass(frozen=True)
class Generator:
    """One generator: its name (as records, recipes and the manifest spell it), its config, the
    Prefect flow that runs it (config, dataset, engine, curation), and, if its batches can run on
    Ray workers, the function that runs it there (config, engine, dataset, curation, runner)."""

    name: str
    config: type[BaseModel]
    flow: Callable[..., dict[str, Any]]
    on_ray: Callable[..., dict[str, Any]] | None = None


GENERATORS: dict[str, Generator] = {
    g.name: g
    for g in (
        Generator("self_instruct", SelfInstructConfig, self_instruct_flow, run_self_instruct_on_ray),
        Generator("evol_instruct", EvolInstructConfig, evol_instruct_flow, run_evol_instruct_on_ray),
        Generator("backtranslation", BacktranslationConfig, backtranslation_flow),
    )
}
