"""The curation chain built from its config for a dataset (`synth.flows.curate` curates whole datasets and files with it)."""

from __future__ import annotations

from pathlib import Path

from synth.engines import Engine
from synth.filters.abilities import AbilityTagger, MixtureFilter
from synth.filters.base import Filter, FilterChain
from synth.filters.decontamination import DecontaminationFilter
from synth.filters.dedup import MinHashIndex, NearDedupFilter, index_folder
from synth.filters.exact_dedup import ExactDedupFilter
from synth.filters.heuristics import HeuristicFilter
from synth.filters.judge import JudgeFilter
from synth.filters.language import LanguageFilter
from synth.filters.minhash import Index
from synth.filters.novelty_filter import NoveltyFilter
from synth.filters.redis_index import RedisMinHashIndex, namespace_for
from synth.filters.spill import Spill
from synth.schemas.curation import CurationConfig
from synth.shards.layout import is_dataset
from synth.shards.read import kept_frames, scan


def build_chain(
    config: CurationConfig,
    dataset: str | Path | None,
    engine: Engine | None = None,
    rebuild_index: bool = False,
    language: str = "en",
    profile: str | None = None,
) -> tuple[FilterChain, Index | None]:
    """The chain, cheap first, with dedup indexes holding the dataset's kept records. `language`
    is the run's: the heuristics' phrase lists and the language check follow it unless the config
    sets them. `profile` is the generator's, for a generator's run: in `paper` the heuristics are
    off unless the config turns them on (the method's own filters ran while it generated).

    Returns the MinHash index too, so the caller can persist it (`index.sync(dataset)`) once the
    batch's records are committed.
    """
    filters: list[Filter] = []
    data_language = config.data_language(language)
    if config.runs_heuristics(profile):
        heuristics = config.heuristics
        if heuristics.language is None:
            heuristics = heuristics.model_copy(update={"language": data_language})
        filters.append(HeuristicFilter(heuristics))
    if config.checks_language(language):
        filters.append(LanguageFilter(data_language))
    if config.exact_dedup:
        # Its keys spill next to the dataset's indexes (a folder it cannot write: the temporary one).
        spill = Spill(index_folder(Path(dataset), "exact")) if is_dataset(dataset) else None
        filters.append(ExactDedupFilter(dataset, spill))
    index: Index | None = None
    if config.minhash.enabled:
        if config.minhash.backend == "redis":
            if rebuild_index and dataset is not None:
                RedisMinHashIndex(config.minhash, namespace_for(dataset, config.minhash)).drop()
            index = RedisMinHashIndex.open(dataset, config.minhash)
        else:
            index = (
                MinHashIndex.open(dataset, config.minhash, rebuild=rebuild_index)
                if dataset
                else MinHashIndex(config.minhash)
            )
        filters.append(NearDedupFilter(index))
    if config.novelty.enabled:
        novelty = NoveltyFilter([], config.novelty.threshold)
        if config.novelty.reference:
            from synth.generators.sources import load_instructions

            novelty.add_pool([i.instruction for i in load_instructions(config.novelty.reference)])
        elif is_dataset(dataset):
            for frame in kept_frames(Path(dataset), ["instruction"]):  # a shard's text at a time
                novelty.add_pool(frame["instruction"].to_list())
        filters.append(novelty)
    if config.decontamination.benchmarks:
        filters.append(DecontaminationFilter(config.decontamination))
    if config.tags_abilities(language):
        if engine is None:
            raise ValueError("ability tags need an engine")
        tagger = AbilityTagger(config.abilities, engine, data_language)
        filters.append(tagger)
        if config.mixture:
            if unknown := sorted(set(config.mixture) - set(tagger.taxonomy)):
                raise ValueError(f"mixture: {', '.join(unknown)} not in the ability taxonomy")
            counts: dict[str, int] = {}
            if is_dataset(dataset):
                frame = scan(dataset).group_by("ability").len().collect()
                counts = {a: n for a, n in frame.iter_rows() if a is not None}
            filters.append(MixtureFilter(config.mixture, counts))
    if config.judge.enabled:
        if engine is None:
            raise ValueError("the judge filter needs an engine")
        filters.append(JudgeFilter(config.judge, engine))
    return FilterChain(filters), index
