"""Embeddings of records for the diversity-aware selectors: the text of a record (its prompt and
response) as one unit vector, from the embedding engine a config names.

- `hidden-states` (the offline default): the mean of a causal model's last hidden states, with
  transformers on a local model folder (the embedded model unless another is named). It works on
  a fresh machine with nothing downloaded, but a model trained for chat is a weak embedder;
  configure a real embedding model for real work.
- `vllm`: an embedding model in-process with vLLM's pooling runner.
- `openai`: any OpenAI-compatible `/v1/embeddings` server.

Embeddings are computed `batch_size` texts at a time and stored like scores (`synth.selection.store`),
so memory holds one batch of activations and a resumed run embeds only what is missing.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import polars as pl

from synth.engines.base import EngineError
from synth.schemas.selection import (
    EmbeddingConfig,
    HiddenStateEmbeddingConfig,
    OpenAIEmbeddingConfig,
    VLLMEmbeddingConfig,
)
from synth.selection.scorers import Item
from synth.selection.store import Say, ScoreStore, items_of

log = logging.getLogger(__name__)


class Embedder(Protocol):
    name: str

    def describe(self) -> dict[str, Any]: ...

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def record_text(item: Item) -> str:
    """What is embedded of a record: its prompt, then its response."""
    return f"{item.prompt}\n\n{item.output}" if item.output else item.prompt


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (float32); a zero row stays zero."""
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)


class HiddenStateEmbedder:
    """Mean-pooled last hidden states of a causal model (transformers), over each text's tokens."""

    name = "embedding"

    def __init__(self, config: HiddenStateEmbeddingConfig) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        from synth.engines.embedded import ensure_embedded_model

        self.config = config
        path = str(ensure_embedded_model()) if config.model is None else config.model
        self.model_name = "SmolLM2-135M-Instruct" if config.model is None else config.model
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.device = (
            "cuda" if config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available()) else "cpu"
        )
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        if not os.environ.get("SYNTH_VERBOSE"):
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # the weights' loading bar; `synth -v` shows it
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModel.from_pretrained(path, dtype=dtype, local_files_only=True).to(self.device).eval()

    def describe(self) -> dict[str, Any]:
        return {"kind": "hidden-states", "model": self.model_name, "max_length": self.config.max_length}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        out = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
        # Texts of similar length share a forward pass: less padding.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        step = self.config.batch_size
        for start in range(0, len(order), step):
            rows = order[start : start + step]
            batch = self.tokenizer(
                [texts[i] for i in rows],
                padding=True,
                truncation=True,
                max_length=self.config.max_length,
                return_tensors="pt",
            ).to(self.device)
            with torch.inference_mode():
                hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            out[rows] = pooled.float().cpu().numpy()
        return out


class VLLMEmbedder:
    """An embedding model pooled in-process by vLLM (`LLM.embed`)."""

    name = "embedding"

    def __init__(self, config: VLLMEmbeddingConfig) -> None:
        from synth.engines.vllm_local import has_cuda

        self.config = config
        if not has_cuda():
            os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        try:
            from vllm import LLM
        except ImportError as e:
            raise EngineError("vLLM is not installed: install the 'cpu' or 'gpu' extra, or use kind 'openai'") from e
        kwargs: dict[str, Any] = dict(
            model=config.model,
            runner="pooling",
            dtype=config.dtype,
            max_model_len=config.max_model_len,
            enforce_eager=not has_cuda(),
        )
        if has_cuda():
            kwargs["gpu_memory_utilization"] = config.gpu_memory_utilization
        self.llm = LLM(**kwargs)

    def describe(self) -> dict[str, Any]:
        return {"kind": "vllm", "model": self.config.model, "max_model_len": self.config.max_model_len}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        outputs = self.llm.embed(
            list(texts),
            use_tqdm=False,
            tokenization_kwargs={"truncation": True, "max_length": self.config.max_model_len},
        )
        return np.asarray([o.outputs.embedding for o in outputs], dtype=np.float32)


class OpenAIEmbedder:
    """`POST {base_url}/embeddings` with a batch of texts; retried on connection errors, 429 and 5xx."""

    name = "embedding"

    def __init__(self, config: OpenAIEmbeddingConfig, transport: Any = None) -> None:
        import httpx

        self.config = config
        headers = {"Authorization": f"Bearer {key}"} if (key := os.environ.get(config.api_key_env)) else {}
        self._client = httpx.Client(
            base_url=config.base_url.rstrip("/"), headers=headers, timeout=config.timeout_s, transport=transport
        )

    def describe(self) -> dict[str, Any]:
        return {"kind": "openai", "model": self.config.model, "base_url": self.config.base_url}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        import httpx

        last = ""
        for attempt in range(self.config.max_retries + 1):
            if attempt:
                time.sleep(self.config.backoff_s * 2 ** (attempt - 1))
            try:
                response = self._client.post("/embeddings", json={"model": self.config.model, "input": list(texts)})
            except httpx.RequestError as e:
                last = f"{type(e).__name__}: {e}"
                continue
            if response.status_code == 429 or response.status_code >= 500:
                last = f"HTTP {response.status_code}: {response.text[:200]}"
                continue
            if response.status_code >= 400:
                raise EngineError(
                    f"{self.config.base_url}/embeddings: HTTP {response.status_code}: {response.text[:300]}"
                )
            try:
                data = sorted(response.json()["data"], key=lambda d: d["index"])
                vectors = np.asarray([d["embedding"] for d in data], dtype=np.float32)
            except (ValueError, KeyError, TypeError) as e:
                raise EngineError(f"{self.config.base_url}/embeddings: malformed reply ({e!r})") from None
            if vectors.ndim != 2 or len(vectors) != len(texts):
                raise EngineError(f"{self.config.base_url}/embeddings: {len(vectors)} vectors for {len(texts)} texts")
            return vectors
        raise EngineError(
            f"{self.config.base_url}/embeddings: no answer after {self.config.max_retries + 1} tries ({last})"
        )


def build_embedder(config: EmbeddingConfig) -> Embedder:
    if isinstance(config, HiddenStateEmbeddingConfig):
        return HiddenStateEmbedder(config)
    if isinstance(config, VLLMEmbeddingConfig):
        return VLLMEmbedder(config)
    return OpenAIEmbedder(config)


def embedder_key(describe: dict[str, Any]) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(describe, sort_keys=True).encode()).hexdigest()[:12]


def ensure_embeddings(
    items: pl.DataFrame, embedder: Embedder, root: str, batch_size: int = 256, say: Say | None = None
) -> np.ndarray:
    """Unit embeddings of `items` (rows in the order of `items`), embedding only those not stored."""
    describe = embedder.describe()
    store = ScoreStore(root, embedder.name, embedder_key(describe), describe)
    stored = store.load()
    done = set() if stored is None else set(stored["id"].to_list())
    todo = items.filter(~pl.col("id").is_in(list(done))) if done else items
    if todo.height and say is not None:
        say(f"embeddings: embedding {todo.height:,} records ({len(done):,} already stored in {store.folder})")
    for part in todo.iter_slices(batch_size):
        batch = items_of(part)
        vectors = unit_rows(embedder.embed([record_text(i) for i in batch]))
        store.add(pl.DataFrame({"id": [i.id for i in batch], "embedding": vectors}))
    rows = store.load()
    if rows is None:
        raise EngineError("no embeddings were stored")
    ordered = items.select("id").join(rows.select("id", "embedding"), on="id", how="left", maintain_order="left")
    if ordered["embedding"].null_count():
        raise EngineError(f"{ordered['embedding'].null_count()} records have no stored embedding")
    return np.ascontiguousarray(ordered["embedding"].to_numpy(), dtype=np.float32)
