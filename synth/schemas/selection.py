"""Configuration of data selection (`synth select`): the method, the budget, the scorers' sampling,
and the embedding engine that the diversity-aware methods use."""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired

from pydantic import Field
from typing_extensions import TypedDict

from synth.schemas.config import OpenAIServer, SamplingConfig, _sampling, _Strict

SELECTION_METHODS = ("deita", "ifd", "longest", "kcenter", "random")
SelectionMethod = Literal["deita", "ifd", "longest", "kcenter", "random"]

# What each method reads: the model's complexity and quality ratings, IFD, response length in tokens,
# embeddings. `random` reads nothing.
METHOD_NEEDS: dict[str, frozenset[str]] = {
    "deita": frozenset({"complexity", "quality", "embedding"}),
    "ifd": frozenset({"ifd"}),
    "longest": frozenset({"tokens"}),
    "kcenter": frozenset({"embedding"}),
    "random": frozenset(),
}


class HiddenStateEmbeddingConfig(_Strict):
    """The offline default: the mean of a causal model's last hidden states over the text's tokens,
    computed with transformers on a local model folder (the embedded model when `model` is empty).
    A stand-in that works on a fresh machine; a real embedding model is better for real work."""

    kind: Literal["hidden-states"] = "hidden-states"
    model: str | None = Field(default=None, description="Local model folder; empty: the embedded model.")
    max_length: int = Field(default=512, ge=8, description="Tokens per text; longer texts are cut.")
    batch_size: int = Field(default=16, ge=1, description="Texts per forward pass (bounds memory).")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    center: bool = Field(
        default=True,
        description="Subtract the candidates' mean embedding before cosine distances: a causal model's "
        "pooled states share one dominant direction (unrelated records were 0.07-0.2 apart raw, 0.6-1.5 "
        "centered, on 40 records with the embedded model), so the paper's threshold refused most records.",
    )


class VLLMEmbeddingConfig(_Strict):
    """An embedding model run in-process by vLLM's pooling runner (`LLM.embed`)."""

    kind: Literal["vllm"] = "vllm"
    model: str = Field(description="A local folder (or cached name) of an embedding model vLLM can pool.")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    max_model_len: int = Field(default=512, gt=0)
    gpu_memory_utilization: float = Field(default=0.3, gt=0, le=1)
    batch_size: int = Field(default=256, ge=1)


class OpenAIEmbeddingConfig(OpenAIServer):
    """Any OpenAI-compatible `/v1/embeddings` server (`vllm serve MODEL --runner pooling`, or another)."""

    kind: Literal["openai"] = "openai"
    batch_size: int = Field(default=64, ge=1)


EmbeddingConfig = Annotated[
    HiddenStateEmbeddingConfig | VLLMEmbeddingConfig | OpenAIEmbeddingConfig, Field(discriminator="kind")
]


class EmbeddingSettings(_Strict):
    """Wrapper so an embedding config file validates on its own (`embedding: {kind: ..., ...}`)."""

    embedding: EmbeddingConfig = Field(default_factory=HiddenStateEmbeddingConfig)


class SelectionConfig(_Strict):
    """How `synth select` picks `budget` records. Defaults follow each method's paper."""

    method: SelectionMethod = "deita"
    budget: int = Field(ge=1, description="Records to select; a dataset with fewer gives all of them.")
    threshold: float = Field(
        default=0.1,
        ge=0,
        le=2,
        description="deita: admit a record only if its cosine distance to every record selected before it "
        "exceeds this (the paper's code refuses a cosine similarity above 0.9).",
    )
    seed: int = Field(default=0, description="random: the draw; kcenter: the first center.")
    language: str = Field(default="en", pattern=r"^[a-z]{2,3}$", description="Language of the scorers' prompts.")
    score_sampling: SamplingConfig = _sampling(
        temperature=0.0,
        top_p=1.0,
        max_tokens=32,
        description="Sampling of the complexity and quality ratings (a JSON object with one score).",
    )
    score_batch: int = Field(default=256, ge=1, description="Records per engine call and per stored chunk of scores.")
    max_ifd_tokens: int = Field(
        default=1024, ge=8, description="IFD: response tokens scored at most (the rest is cut, in both losses)."
    )
    embedding: EmbeddingConfig = Field(default_factory=HiddenStateEmbeddingConfig)

    def identity(self) -> dict[str, Any]:
        """What defines a selection's result (the batch size only changes how work is split)."""
        return self.model_dump(exclude={"score_batch"})


class SubsetFigures(TypedDict):
    """What a selected subset looks like: the method, its size and the candidates', the mean of
    each score over it (None where no selected record has one) and its diversity (mean cosine
    distance to the nearest other selected record; None without embeddings)."""

    method: str
    selected: int
    candidates: int
    mean_deita_score: float | None
    mean_complexity: float | None
    mean_quality: float | None
    mean_ifd: float | None
    mean_response_tokens: float | None
    diversity: float | None


class SubsetInfo(SubsetFigures):
    """A subset's figures with the dataset it was written to and its run (a selection run's state
    holds this under `selection`)."""

    dataset: str
    run_id: str


class SelectionSummary(SubsetInfo):
    """A written selection: its figures, the output's kept and rejected counts, and whether the
    run found it already written (`up_to_date`)."""

    kept: int
    rejected: int
    rejects_by_reason: dict[str, dict[str, int]]
    up_to_date: bool


class MethodRow(SelectionSummary):
    """One method's row of a comparison: with the proxy evaluation's loss of the model tuned on
    the subset (None without a reference set) and the base model's."""

    proxy_loss: float | None
    base_loss: NotRequired[float]
