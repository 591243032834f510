"""The generators, by name: each one's config, its flow and the check of its inputs.

Everything that lists generators reads this table: `synth generate` builds a command for each
entry from its config, a recipe's step types are the entries' configs (each with a `generator`
field holding its name), and the recipe runner calls the entry's flow (locally or on Ray: the flow
takes the runner). Adding a generator is its module and one entry here (see "Adding a generator" in
docs/development.md); `register` adds one at run time (a plugin, a test). Configs and flows are looked up
by name when used, so reading the table imports nothing (neither pydantic nor Prefect): the
command line reads it as it starts.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import BaseModel


@dataclass(frozen=True)
class Generator:
    """One generator: its name (as records, recipes and the manifest spell it), its config, the
    Prefect flow that runs it (config, dataset, engine, curation, runner: its batches run on Ray
    workers when given a Ray runner and a Ray task runner), and the check of its inputs (config,
    dataset path: reads its seeds or sources and fails naming the file and line, before any model
    loads); each as "module:attribute". Optionally its records' own typed block (a `Block`, kept in
    the block's column) and the reject stages only it writes."""

    name: str
    config_path: str
    flow_path: str
    inputs_path: str
    block_path: str = ""
    stages: tuple[str, ...] = ()

    @property
    def config(self) -> type[BaseModel]:
        return load(self.config_path)

    @property
    def check_inputs(self) -> Callable[[Any, str | Path], None]:
        return load(self.inputs_path)

    @property
    def flow(self) -> Callable[..., Any]:
        """The flow; it returns the run's summary (a `synth.schemas.runs.RunSummary`, of its job's
        own summary type; not named here, where the schemas layer, which reads the registry, is
        not imported)."""
        return load(self.flow_path)


def load(path: str) -> Any:
    """The object a "module:attribute" path names (imported when asked for)."""
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)


class Table(dict[str, Generator]):
    """The table of generators: a dict that counts its changes (`changes`), so what is derived from
    it (the record blocks) is derived again only after one."""

    changes = 0

    def __setitem__(self, name: str, generator: Generator) -> None:
        super().__setitem__(name, generator)
        self.changes += 1

    def __delitem__(self, name: str) -> None:
        super().__delitem__(name)
        self.changes += 1


def block_paths() -> list[str]:
    """Where the generators' record blocks are ("module:attribute"), in table order (two
    generators may name the same block); `synth.schemas.records.blocks` loads them."""
    return list(dict.fromkeys(g.block_path for g in GENERATORS.values() if g.block_path))


def stages() -> list[str]:
    """The reject stages the generators declare, in table order (each once)."""
    return list(dict.fromkeys(s for g in GENERATORS.values() for s in g.stages))


def register(generator: Generator) -> Generator:
    """Add `generator` to the table (replacing an entry of the same name); returns it."""
    GENERATORS[generator.name] = generator
    return generator


GENERATORS: Table = Table(
    (g.name, g)
    for g in (
        Generator(
            "self_instruct",
            "synth.schemas:SelfInstructConfig",
            "synth.flows.self_instruct:self_instruct_flow",
            "synth.generators.self_instruct:check_inputs",
            stages=("classification", "instance"),
        ),
        Generator(
            "evol_instruct",
            "synth.schemas:EvolInstructConfig",
            "synth.flows.evol_instruct:evol_instruct_flow",
            "synth.generators.evol_instruct:check_inputs",
            stages=("evolution",),
        ),
        Generator(
            "backtranslation",
            "synth.schemas:BacktranslationConfig",
            "synth.flows.self_training:backtranslation_flow",
            "synth.generators.backtranslation:check_inputs",
            stages=("document", "segment", "augmentation", "self-curation"),
        ),
        Generator(
            "magpie",
            "synth.schemas.magpie:MagpieConfig",
            "synth.flows.magpie:magpie_flow",
            "synth.generators.magpie:check_inputs",
        ),
        Generator(
            "preferences",
            "synth.schemas.preferences:PreferencesConfig",
            "synth.flows.preferences:preferences_flow",
            "synth.generators.preferences:check_inputs",
            block_path="synth.schemas.preferences:Preferences",
            stages=("preference",),
        ),
        Generator(
            "code",
            "synth.schemas.code:SelfCodeAlignConfig",
            "synth.flows.code:code_flow",
            "synth.generators.self_code_align:check_inputs",
            block_path="synth.schemas.code:Code",
            stages=("execution",),
        ),
        Generator(
            "oss_instruct",
            "synth.schemas.code:OSSInstructConfig",
            "synth.flows.code:oss_instruct_flow",
            "synth.generators.oss_instruct:check_inputs",
            block_path="synth.schemas.code:Code",
            stages=("document", "execution"),
        ),
        Generator(
            "reflection",
            "synth.schemas.reflection:ReflectionConfig",
            "synth.flows.reflection:reflection_flow",
            "synth.generators.reflection:check_inputs",
            block_path="synth.schemas.reflection:Reflection",
            stages=("reflection",),
        ),
        Generator(
            "unnatural",
            "synth.schemas.unnatural:UnnaturalConfig",
            "synth.flows.unnatural:unnatural_flow",
            "synth.generators.unnatural:check_inputs",
            block_path="synth.schemas.unnatural:Unnatural",
            stages=("expansion",),
        ),
        Generator(
            "codeclm",
            "synth.schemas.codeclm:CodeclmConfig",
            "synth.flows.codeclm:codeclm_flow",
            "synth.generators.codeclm:check_inputs",
            block_path="synth.schemas.codeclm:Codeclm",
            stages=("contrastive",),
        ),
    )
)
