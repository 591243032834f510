"""Each generator's check of its input files, run before anything heavy loads: reading a seed or
source file, or opening a corpus, needs neither Prefect nor a model, so a bad file fails in a
second naming its line. The registry names these; the flows read the same files again to run."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from synth.generators.documents import read_documents
from synth.generators.seed_pairs import load_seed_pairs
from synth.generators.seeds import load_seed_tasks
from synth.generators.sources import SourceError, load_instructions
from synth.generators.unnatural import read_seed_sets

if TYPE_CHECKING:
    from synth.schemas import BacktranslationConfig, EvolInstructConfig, SelfInstructConfig
    from synth.schemas.code import OSSInstructConfig, SelfCodeAlignConfig
    from synth.schemas.codeclm import CodeclmConfig
    from synth.schemas.magpie import MagpieConfig
    from synth.schemas.preferences import PreferencesConfig
    from synth.schemas.reflection import ReflectionConfig
    from synth.schemas.unnatural import UnnaturalConfig


def check_self_instruct(config: SelfInstructConfig, dataset: str | Path) -> None:
    """Read the seed tasks."""
    load_seed_tasks(config.seeds, config.language)


def check_evol_instruct(config: EvolInstructConfig, dataset: str | Path) -> None:
    """Read the source (a source that is the dataset itself and does not exist yet is left to an
    earlier step of a recipe)."""
    source = Path(config.source)
    if source.exists() or source.resolve() != Path(dataset).resolve():
        load_instructions(config.source)


def check_backtranslation(config: BacktranslationConfig, dataset: str | Path) -> None:
    """Read the seed pairs and open the corpus (its schema, and its first usable document)."""
    if config.seeds is not None:
        load_seed_pairs(config.seeds, config.language, training=config.self_train is not None)
    read_documents(config.docs, config.text_field)


def check_self_code_align(config: SelfCodeAlignConfig, dataset: str | Path) -> None:
    """Cut the seed functions (a file that is not Python fails naming its line; no usable function
    at all is an error), read the benchmark files, and make sure generated code can run isolated."""
    from synth.filters.code_benchmarks import file_pieces
    from synth.generators.code_seeds import usable_seeds
    from synth.sandbox import Sandbox

    Sandbox(isolation=config.isolation).available()  # the cheapest check first
    usable_seeds(config.code, config.classes)
    for path in config.decontaminate:
        file_pieces(path)


def check_oss_instruct(config: OSSInstructConfig, dataset: str | Path) -> None:
    """Find the code files, read the benchmark files, and, where solutions run, the sandbox."""
    from synth.filters.code_benchmarks import file_pieces
    from synth.generators.code_seeds import code_files
    from synth.sandbox import Sandbox

    code_files(config.code)
    for path in config.decontaminate:
        file_pieces(path)
    if config.execute:
        Sandbox(isolation=config.isolation).available()


def check_magpie(config: MagpieConfig, dataset: str | Path) -> None:
    """Magpie reads no seed or source file: nothing to check."""


def writes_its_source(config: PreferencesConfig, dataset: str | Path) -> bool:
    return Path(config.source).resolve() == Path(dataset).resolve()


def check_preferences(config: PreferencesConfig, dataset: str | Path) -> None:
    """Read the source; the pairs go to another dataset than the one they are made from (a source
    that changes while it is read would change the run)."""
    if writes_its_source(config, dataset):
        raise SourceError(f"{config.source}: write the preference pairs to another dataset than their source")
    load_instructions(config.source)


def check_reflection(config: ReflectionConfig, dataset: str | Path) -> None:
    """Read the source: pairs to recycle, written to another dataset than their source, and at
    least one with a response."""
    if Path(config.source).resolve() == Path(dataset).resolve():
        raise SourceError(f"{config.source}: write the recycled pairs to another dataset than their source")
    items = load_instructions(config.source)[: config.limit]
    if not any(item.output.strip() for item in items):
        raise SourceError(f"{config.source}: {len(items)} instructions, none with a response to recycle")


def check_unnatural(config: UnnaturalConfig, dataset: str | Path) -> None:
    """Read the seed examples (sets of three, each with instruction, input and constraints)."""
    read_seed_sets(config.seeds, config.language)


def check_codeclm(config: CodeclmConfig, dataset: str | Path) -> None:
    """Read the seed instructions (Self-Instruct's seed formats)."""
    load_seed_tasks(config.seeds, config.language)
