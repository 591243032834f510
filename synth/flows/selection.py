"""Selecting a budget of records from a dataset into another (`synth select`), and comparing
methods on the same budget.

The output is a dataset like any other: the selected records are its kept records, each with its
scores, `selection_method`, `selection_rank` and `selection_distance`; every other record is a
reject (stage `selection`, or `score` where a scorer could not score it, with its raw reply), so
nothing is lost. The run's config in the manifest records the selection's parameters and the
scorers' keys and models; its state holds the subset's figures (mean scores, diversity).
Scores and embeddings are stored once per scorer (`synth.selection.store`): a second selection, a
second method or a resumed run reads them instead of scoring again.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypedDict, Unpack

import numpy as np
import polars as pl
from pydantic import BaseModel

from synth.engines.base import Engine
from synth.filters.base import reject
from synth.flows.common import Committed
from synth.flows.jobs import Batch, Maker, MergedState, RunContext, Spec
from synth.flows.run import run_job
from synth.schemas import (
    DatasetConfig,
    EngineConfig,
    OpenAIEngineConfig,
    Record,
    Reject,
    VLLMEngineConfig,
    run_id,
)
from synth.schemas.curation import KEEP_ALL
from synth.schemas.runs import RunState, RunSummary
from synth.schemas.selection import MethodRow, SelectionConfig, SelectionSummary, SubsetFigures, SubsetInfo
from synth.selection.candidates import (
    IFD_FLAG,
    SCORE_COLUMNS,
    Candidates,
    Choice,
    choose,
    load_items,
    needs_of,
    score_candidates,
)
from synth.selection.embeddings import Embedder
from synth.selection.selectors import diversity
from synth.selection.store import Say, default_root
from synth.shards import DatasetError
from synth.shards.layout import MANIFEST, is_dataset, read_manifest
from synth.shards.read import kept_frames

SELECT = "select"


def _tokenizer(engine: Engine | None, config: EngineConfig | None) -> tuple[Any | None, str]:
    """The scoring model's tokenizer without loading the model (None: count words)."""
    get = getattr(engine, "chat_template", None) if engine is not None else None
    template = get() if callable(get) else None
    if template is not None:
        return template.tokenizer, engine.model_name if engine is not None else ""
    path: str | None = None
    if isinstance(config, VLLMEngineConfig):
        from synth.engines.embedded import resolve_model

        path, name = resolve_model(config.model)
    elif isinstance(config, OpenAIEngineConfig) and config.tokenizer:
        path, name = config.tokenizer, config.model
    if path is None:
        return None, "words"
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, local_files_only=True), name


class LazyEngine:
    """The engine a config names, built on its first call: a selection whose scores are all stored
    loads no model. Its name and chat template (the tokenizer's, from the model folder) come from
    the config without loading the model."""

    def __init__(self, config: EngineConfig, tokenizer: Any | None) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.model_name = _model_name(config)
        self._engine: Engine | None = None

    def _get(self) -> Any:
        from synth.engines import get_engine

        if self._engine is None:
            self._engine = get_engine(self.config)
        return self._engine

    def chat(self, requests: Sequence[Any]) -> Any:
        return self._get().chat(requests)

    def score_continuations(self, requests: Sequence[Any]) -> Any:
        return self._get().score_continuations(requests)

    def chat_template(self) -> Any:
        from synth.engines.base import ChatTemplate

        return ChatTemplate(self.tokenizer) if self.tokenizer is not None else None

    def close(self) -> None:
        pass  # the engine belongs to the process's table: every command closes it as it ends (`synth.cli.ending`)


def _model_name(config: EngineConfig) -> str:
    if isinstance(config, VLLMEngineConfig):
        from synth.engines.embedded import EMBEDDED_MODEL_NAME

        return config.model or EMBEDDED_MODEL_NAME
    return config.model


class ScoringOptions(TypedDict, total=False):
    """Where a selection's scores and embeddings come from.

    - `engine`: a live engine for the model scores (tests pass a scripted one).
    - `engine_config`: the engine to build for them instead, only if a model score is missing
      (default: the embedded model).
    - `scores`: where they are stored (default: the source's `index/selection/`).
    - `embedder`: a live embedder instead of the one the selection config names.
    - `say`: where progress lines go.
    """

    engine: Engine | None
    engine_config: EngineConfig | None
    scores: str | Path | None
    embedder: Embedder | None
    say: Say | None


def prepare(
    source: str | Path,
    methods: Sequence[str],
    config: SelectionConfig,
    *,
    with_embeddings: bool = False,
    **scoring: Unpack[ScoringOptions],
) -> Candidates:
    """The source's candidates with every score `methods` need (embeddings too with
    `with_embeddings`), computed once and stored (see `ScoringOptions`)."""
    from synth.selection.embeddings import build_embedder

    root = Path(source)
    if not is_dataset(root):
        raise DatasetError(f"{root}: no {MANIFEST}; not a dataset directory")
    items = load_items(root)
    needs = needs_of(methods) | ({"embedding"} if with_embeddings else set())
    engine, engine_config, embedder = scoring.get("engine"), scoring.get("engine_config"), scoring.get("embedder")
    if engine is None and engine_config is None:
        engine_config = VLLMEngineConfig()
    tokenizer, tokenizer_name = _tokenizer(engine, engine_config)

    def model() -> Engine:
        if engine is not None:
            return engine
        assert engine_config is not None
        return LazyEngine(engine_config, tokenizer)

    return score_candidates(
        items,
        needs,
        config,
        scoring.get("scores") or default_root(root),
        model,
        tokenizer,
        tokenizer_name,
        lambda: embedder if embedder is not None else build_embedder(config.embedding),
        scoring.get("say"),
    )


def _mean(values: np.ndarray) -> float | None:
    values = values[~np.isnan(values)]
    return round(float(values.mean()), 4) if len(values) else None


def figures(candidates: Candidates, choice: Choice) -> SubsetFigures:
    """What a subset looks like: its size, mean scores and diversity (mean cosine distance to the
    nearest other selected record, where embeddings exist)."""
    at = choice.selection.indices
    div = diversity(candidates.embeddings[at]) if candidates.embeddings is not None and len(at) > 1 else float("nan")
    return {
        "method": choice.method,
        "selected": len(at),
        "candidates": candidates.items.height,
        "mean_deita_score": _mean(candidates.deita_score()[at]),
        "mean_complexity": _mean(candidates.column("complexity_score")[at]),
        "mean_quality": _mean(candidates.column("quality_score")[at]),
        "mean_ifd": _mean(candidates.column("ifd")[at]),
        "mean_response_tokens": _mean(candidates.column("response_tokens")[at]),
        "diversity": None if math.isnan(div) else round(div, 4),
    }


def _annotations(candidates: Candidates, choice: Choice) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Per record id: its scores (and flag), and for selected ones the selection fields."""
    columns = list(SCORE_COLUMNS.values())
    scores: dict[str, dict[str, Any]] = {}
    for row in candidates.scores.select("id", *columns).iter_rows(named=True):
        values = {c: row[c] for c in columns if row[c] is not None}
        if "response_tokens" in values:
            values["response_tokens"] = int(values["response_tokens"])
        scores[row["id"]] = values
    ids = candidates.items["id"]
    selected: dict[str, dict[str, Any]] = {}
    for rank, (index, distance) in enumerate(zip(choice.selection.indices, choice.selection.distances, strict=True)):
        selected[ids[int(index)]] = {
            "selection_method": choice.method,
            "selection_rank": rank,
            "selection_distance": None if math.isnan(distance) else float(distance),
        }
    return scores, selected


def _run(source: Path, config: SelectionConfig, method: str, candidates: Candidates) -> tuple[SelectionRun, str]:
    manifest = read_manifest(source)
    ids = hashlib.sha256("\x1f".join(candidates.items["id"].to_list()).encode()).hexdigest()[:16]
    setup = {
        "selection": {**config.model_copy(update={"method": method}).identity()},
        "source": str(source),
        "source_dataset": manifest.dataset_id,
        "source_records": ids,
        "scorers": candidates.scorers,
    }
    return SelectionRun(**setup), run_id(SELECT, setup)


class SelectionState(RunState, total=False):
    selection: SubsetInfo


@dataclass
class SelectionJob(MergedState):
    """A method's choice written as a dataset: the source's kept records in order, one batch per
    `batch_size`, the selected ones kept and every other one a reject (a run of the `select`
    kind, through the same runner as a generator's: lock, resume, commits and summary)."""

    config: SelectionRun
    run_id: str
    source: Path
    scores: dict[str, dict[str, Any]]
    selected: dict[str, dict[str, Any]]
    choice: Choice
    figures: SubsetInfo
    batch_size: int
    generator: ClassVar[str] = SELECT
    state_type: ClassVar[Any] = SelectionState
    generator_run: ClassVar[bool] = False
    made: int = 0  # batches written by this session
    seen: set[str] = field(default_factory=set)  # ids met so far: a repeated one is a duplicate

    def open(self, run: RunContext) -> str:
        return f"Selection by {self.choice.method} into {run.dataset.path}"

    def plan(self, run: RunContext) -> Iterator[Spec]:
        batch, done = 0, run.info.batches_done
        for frame in kept_frames(self.source):
            for part in frame.iter_slices(self.batch_size):
                if batch < done:  # committed by an earlier session: its ids were seen
                    self.seen.update(part["id"].to_list())
                else:
                    yield Spec(batch, part)
                batch += 1

    def make(self, maker: Maker, spec: Spec) -> Batch[SelectionState]:
        kept, rejects = _split(spec.data, self.scores, self.selected, self.choice, self.seen)
        return Batch(kept, rejects, {"selection": self.figures})

    def committed(self, run: RunContext, spec: Spec, batch: Batch[SelectionState], result: Committed) -> str:
        self.made += 1
        return f"{spec.data.height} source records"

    def progress(self, run: RunContext) -> float:
        return 1.0 if run.info.status == "finished" else 0.0

    def finish(self, run: RunContext, summary: RunSummary) -> RunSummary:
        return summary


class SelectionRun(BaseModel):
    """What defines a selection's run (its id hashes it): the selection settings, the source
    dataset and its records, and the scorers."""

    selection: dict[str, Any]
    source: str
    source_dataset: str
    source_records: str
    scorers: dict[str, Any]


def write_selection(
    source: str | Path,
    out: str | Path,
    candidates: Candidates,
    choice: Choice,
    config: SelectionConfig,
    *,
    batch_size: int = 10_000,
    wait: float | None = 0,
) -> SelectionSummary:
    """Write `choice` as the dataset `out`: the selected records kept, every other record of
    `source` a reject. One committed batch per `batch_size` source records, so a killed run
    resumes after its last committed batch; a finished run with the same inputs is not written
    again."""
    root = Path(source)
    setup, rid = _run(root, config, choice.method, candidates)
    scores, selected = _annotations(candidates, choice)
    subset: SubsetInfo = {**figures(candidates, choice), "dataset": str(out), "run_id": rid}
    job = SelectionJob(setup, rid, root, scores, selected, choice, subset, batch_size)
    written = run_job(job, None, DatasetConfig(path=str(out), wait=wait), curation=KEEP_ALL, batch_retries=0)
    return {
        **subset,
        "kept": written["kept"],
        "rejected": written["rejected"],
        "rejects_by_reason": written["rejects_by_reason"],
        "up_to_date": job.made == 0,
    }


def _split(
    part: pl.DataFrame,
    scores: dict[str, dict[str, Any]],
    selected: dict[str, dict[str, Any]],
    choice: Choice,
    seen: set[str],
) -> tuple[list[Record], list[Reject]]:
    kept: list[Record] = []
    rejects: list[Reject] = []
    for row in part.iter_rows(named=True):
        record = Record.model_validate(row)
        values = dict(scores.get(record.id, {}))
        if values.get("ifd") is not None and values["ifd"] >= 1.0 and IFD_FLAG not in record.tags:
            values["tags"] = [*record.tags, IFD_FLAG]
        if record.id in seen:
            rejects.append(
                reject(record, "selection", "duplicate record", "the same content appears earlier", **values)
            )
            continue
        seen.add(record.id)
        if record.id in selected:
            kept.append(record.model_copy(update={**values, **selected[record.id]}))
        elif (failure := choice.failed.get(record.id)) is not None:
            rejects.append(reject(record, "score", failure.reason, failure.detail, raw=failure.raw, **values))
        else:
            reason, detail = choice.left_out.get(record.id, ("outside the budget", ""))
            rejects.append(reject(record, "selection", reason, detail, selection_method=choice.method, **values))
    return kept, rejects


def select_dataset(
    source: str | Path,
    out: str | Path,
    config: SelectionConfig,
    *,
    wait: float | None = 0,
    **scoring: Unpack[ScoringOptions],
) -> SelectionSummary:
    """Select `config.budget` records of `source` by `config.method` into the dataset `out`
    (scored as `scoring` says: see `ScoringOptions`)."""
    candidates = prepare(source, [config.method], config, **scoring)
    return write_selection(source, out, candidates, choose(candidates, config.method, config), config, wait=wait)


def compare_methods(
    source: str | Path,
    out: str | Path,
    methods: Sequence[str],
    config: SelectionConfig,
    *,
    reference: str | Path | None = None,
    evaluation: Any | None = None,
    wait: float | None = 0,
    **scoring: Unpack[ScoringOptions],
) -> list[MethodRow]:
    """One subset per method on the same budget, as `out/METHOD`, each from the same stored scores
    and embeddings (the diversity column needs them for every method; see `ScoringOptions`). With
    `reference`, each subset also gets the proxy evaluation of `synth evaluate` (a fine-tune per
    method: slow), and its row the tuned model's loss per token on the reference pairs."""
    candidates = prepare(source, methods, config, with_embeddings=True, **scoring)
    rows: list[MethodRow] = []
    for method in methods:
        method_config = config.model_copy(update={"method": method})
        folder = Path(out) / method
        written = write_selection(
            source, folder, candidates, choose(candidates, method, method_config), method_config, wait=wait
        )
        row: MethodRow = {**written, "proxy_loss": None}
        if reference is not None:
            from synth.training import evaluate_dataset

            result = evaluate_dataset(folder, reference, evaluation, progress=scoring.get("say"))
            row["proxy_loss"] = result.tuned.loss
            row["base_loss"] = result.base.loss
        rows.append(row)
    return rows
