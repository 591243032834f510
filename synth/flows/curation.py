"""The curation chain built from its config for a dataset, and curating whole datasets and files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl

from synth.engines import Engine
from synth.filters.abilities import AbilityTagger, MixtureFilter
from synth.filters.base import Filter, FilterChain
from synth.filters.decontamination import DecontaminationFilter
from synth.filters.dedup import MinHashIndex, NearDedupFilter
from synth.filters.exact_dedup import ExactDedupFilter
from synth.filters.heuristics import HeuristicFilter
from synth.filters.judge import JudgeFilter
from synth.filters.language import LanguageFilter
from synth.filters.minhash import Index
from synth.filters.novelty_filter import NoveltyFilter
from synth.filters.redis_index import RedisMinHashIndex, namespace_for
from synth.flows.common import commit_curated, run_summary
from synth.schemas import Record, Reject, RunInfo, run_id
from synth.schemas.curation import CurationConfig
from synth.schemas.records import add_counts, flat_counts
from synth.shards import DatasetError, DatasetWriter
from synth.shards.files import json_line, utf8_lines
from synth.shards.layout import MANIFEST
from synth.shards.read import checked_path, scan
from synth.text import control_problem


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
        filters.append(ExactDedupFilter(dataset))
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
        if config.novelty.reference:
            from synth.generators.sources import load_instructions

            pool = [i.instruction for i in load_instructions(config.novelty.reference)]
        elif dataset is not None and (Path(dataset) / MANIFEST).is_file():
            pool = scan(dataset).select("instruction").collect()["instruction"].to_list()
        else:
            pool = []
        filters.append(NoveltyFilter(pool, config.novelty.threshold))
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
            if dataset is not None and (Path(dataset) / MANIFEST).is_file():
                frame = scan(dataset).group_by("ability").len().collect()
                counts = {a: n for a, n in frame.iter_rows() if a is not None}
            filters.append(MixtureFilter(config.mixture, counts))
    if config.judge.enabled:
        if engine is None:
            raise ValueError("the judge filter needs an engine")
        filters.append(JudgeFilter(config.judge, engine))
    return FilterChain(filters), index


# -- curating whole datasets and files --------------------------------------------------------------

CURATE = "curate"


def benchmark_hits(chain: FilterChain) -> dict[str, int]:
    """How many records hit each benchmark item, from the chain's decontamination filter."""
    hits: dict[str, int] = {}
    for f in chain.filters:
        if isinstance(f, DecontaminationFilter):
            hits.update(f.hits)
    return dict(sorted(hits.items(), key=lambda kv: (-kv[1], kv[0])))


def _rows_to_records(frame: pl.DataFrame) -> list[Record]:
    return [Record.model_validate(row) for row in frame.iter_rows(named=True)]


def records_from_file(path: str | Path) -> list[Record]:
    """Records from a JSONL or Parquet file with `instruction`, `input` (optional) and `output`;
    a missing or non-text field is an error naming the file (and the line, for JSONL). Each record
    keeps the file's own `id` (if any) as `source_id` and its place as `source_doc` ("FILE:LINE",
    or "FILE:ROW" for Parquet); its `id` is the content id every record has."""
    file = Path(path)
    rows: list[tuple[str, str, str, str | None, int]] = []
    if file.suffix == ".parquet":
        frame = pl.read_parquet(file, glob=False)
        for column in ("instruction", "output"):
            if column not in frame.columns:
                raise CurationInputError(f"{file}: no '{column}' column (columns: {', '.join(frame.columns)})")
            if frame.schema[column] != pl.String:
                raise CurationInputError(f"{file}: column '{column}' is {frame.schema[column]}, expected text")
        inputs = (
            frame["input"].cast(pl.String).fill_null("") if "input" in frame.columns else pl.Series([""] * frame.height)
        )
        ids = (
            frame["id"].cast(pl.String) if "id" in frame.columns else pl.Series([None] * frame.height, dtype=pl.String)
        )
        for number, (ins, inp, out, sid) in enumerate(
            zip(frame["instruction"], inputs, frame["output"], ids, strict=True), start=1
        ):
            if ins is None or out is None:
                raise CurationInputError(f"{file}: row {number}: empty 'instruction' or 'output'")
            for column, value in (("instruction", ins), ("input", inp), ("output", out)):
                if problem := control_problem(value or ""):
                    raise CurationInputError(
                        f"{file}: row {number}: column '{column}' holds a {problem}; only text, tabs and line breaks are read"
                    )
            rows.append((ins, inp, out, sid, number))
    elif file.suffix == ".jsonl":
        for number, line in utf8_lines(file, CurationInputError):
            if not line.strip():
                continue
            data = json_line(file, number, line, CurationInputError)
            if not isinstance(data, dict):
                raise CurationInputError(f"{file}:{number}: expected a JSON object")
            for key in ("instruction", "output"):
                if not isinstance(data.get(key), str):
                    raise CurationInputError(f"{file}:{number}: field '{key}' is missing or not text")
            if not isinstance(data.get("input", ""), str):
                raise CurationInputError(f"{file}:{number}: field 'input' is not text")
            sid = data.get("id")
            if (sid is not None and not isinstance(sid, str | int)) or isinstance(sid, bool):
                raise CurationInputError(f"{file}:{number}: field 'id' is not text or a number")
            rows.append(
                (data["instruction"], data.get("input", ""), data["output"], None if sid is None else str(sid), number)
            )
    else:
        raise CurationInputError(f"{file}: expected a .jsonl or .parquet file of records, or a dataset directory")
    if not rows:
        raise CurationInputError(f"{file}: no records")
    return [
        Record(
            generator="import",
            instruction=i,
            input=n,
            output=o,
            source_id=sid,
            source_doc=f"{file.name}:{number}",
            tags=["imported"],
        )
        for i, n, o, sid, number in rows
    ]


class CurationInputError(ValueError):
    """Records that cannot be curated as given; the message names the file and line."""


def _curate_run(config: CurationConfig, source: str) -> RunInfo:
    rid = run_id(CURATE, config.model_dump(), source)
    return RunInfo(run_id=rid, generator=CURATE, config=config.model_dump(), engine={}, model="")


def curate_dataset(
    path: str | Path,
    config: CurationConfig,
    engine: Engine | None = None,
    batch_size: int = 10_000,
    wait: float | None = 0,
) -> dict[str, Any]:
    """Apply the chain to a dataset's kept records in place: the first of each duplicate group
    stays, everything dropped moves to the rejects with its stage and reason.

    Holds the dataset's writer lock from before the first read to the last write, so records a
    generator commits meanwhile are never lost (a second writer waits `wait` seconds, or fails
    naming the holder). Reads one shard at a time and writes as it goes: memory holds a batch."""
    root = Path(path)
    if not (root / MANIFEST).is_file():
        raise DatasetError(f"{root}: no {MANIFEST}; not a dataset directory")
    # The dataset's records are what is being curated: the indexes start empty, not from the
    # shards, and live in this process (no other writer can add to the dataset meanwhile).
    local = config.model_copy(deep=True)
    local.minhash.backend = "local"
    chain, _ = build_chain(local, dataset=None, engine=engine)
    run = _curate_run(config, f"in-place:{root.resolve()}")
    counts: dict[str, dict[str, int]] = {}
    dropped: list[str] = []
    seen = 0

    def batches(writer: DatasetWriter) -> Iterator[tuple[list[Record], list[Reject]]]:
        nonlocal seen
        for shard in [s for s in writer.manifest.shards if s.kind == "kept"]:
            frame = pl.read_parquet(checked_path(root, shard), glob=False)
            for part in frame.iter_slices(batch_size):
                records = _rows_to_records(part)
                seen += len(records)
                result = chain.apply(records)
                add_counts(counts, flat_counts(result.counts))
                kept_ids = {r.id for r in result.kept}
                dropped.extend(r.id for r in records if r.id not in kept_ids)
                yield result.kept, result.rejects

    with DatasetWriter(root, wait=wait, holder=f"synth curate {run.run_id}") as writer:
        writer.start_run(run)
        writer.replace_kept(run.run_id, batches(writer))
        writer.finish_run(run.run_id)
        summary = run_summary(writer, run.run_id, root, reached_target=True)
        # The dataset's own indexes must forget what left it.
        if config.minhash.enabled and config.minhash.backend == "local":
            MinHashIndex.open(root, config.minhash, rebuild=True)
        elif config.minhash.enabled and dropped:
            index = RedisMinHashIndex.open(root, config.minhash)
            with index.locked():
                index.remove(dropped)
    summary.update(records_in=seen, counts=counts, benchmark_hits=benchmark_hits(chain))
    return summary


def curate_file(
    file: str | Path,
    out: str | Path,
    config: CurationConfig,
    engine: Engine | None = None,
    batch_size: int = 10_000,
    wait: float | None = 0,
    rebuild_index: bool = False,
) -> dict[str, Any]:
    """Curate records from a file into a dataset, deduplicated against what the dataset holds
    (its MinHash index rebuilt from the shards first with `rebuild_index`)."""
    records = records_from_file(file)
    run = _curate_run(config, f"file:{Path(file).resolve()}")
    with DatasetWriter(out, wait=wait, holder=f"synth curate {run.run_id}") as writer:
        writer.start_run(run)
        chain, index = build_chain(config, dataset=out, engine=engine, rebuild_index=rebuild_index)
        for batch, start in enumerate(range(0, len(records), batch_size)):
            if batch < writer.manifest.runs[run.run_id].batches_done:
                continue
            commit_curated(writer, run.run_id, batch, chain, index, records[start : start + batch_size], [])
        writer.finish_run(run.run_id)
        summary = run_summary(writer, run.run_id, out, reached_target=True)
    summary.update(records_in=len(records), benchmark_hits=benchmark_hits(chain))
    return summary
