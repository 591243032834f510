"""Selecting a budget of records from a dataset into another (`synth select`), and comparing
methods on the same budget.

The output is a dataset like any other (written by `synth.flows.selection_write`): the selected
records are its kept records, each with its scores, `selection_method`, `selection_rank` and
`selection_distance`; every other record is a reject (stage `selection`, or `score` where a scorer
could not score it, with its raw reply), so nothing is lost.
Scores and embeddings are stored once per scorer (`synth.selection.store`): a second selection, a
second method or a resumed run reads them instead of scoring again.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypedDict, Unpack

from synth.engines.base import Engine
from synth.flows.selection_write import write_selection
from synth.schemas import (
    EngineConfig,
    OpenAIEngineConfig,
    VLLMEngineConfig,
)
from synth.schemas.selection import MethodRow, SelectionConfig, SelectionSummary
from synth.selection.candidates import (
    Candidates,
    choose,
    load_items,
    needs_of,
    score_candidates,
)
from synth.selection.embeddings import Embedder
from synth.selection.store import Say, default_root
from synth.shards import DatasetError
from synth.shards.layout import MANIFEST, is_dataset


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
