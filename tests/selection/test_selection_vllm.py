"""Selection scorers through the real vLLM engine on the embedded model: Deita ratings with
structured output, IFD from prompt log-probabilities, and the hidden-state embeddings."""

from __future__ import annotations

import math

import pytest

from synth.schemas.config import SamplingConfig
from synth.schemas.selection import HiddenStateEmbeddingConfig
from synth.selection.embeddings import HiddenStateEmbedder, unit_rows
from synth.selection.scorers import IFDScorer, Item, RatingScorer

pytestmark = pytest.mark.engine

ITEMS = [
    Item("a", "What is the capital of France?", "", "The capital of France is Paris."),
    Item("b", "Name a primary color.", "", "The capital of France is Paris."),  # unrelated answer
    Item(
        "c",
        "Write a sorting function in Python and explain its complexity.",
        "",
        "def sort(xs):\n    return sorted(xs)\n\nIt runs in O(n log n) time.",
    ),
]


def test_ratings_are_integers_from_one_to_six_for_every_record(vllm_engine):
    sampling = SamplingConfig(temperature=0.0, top_p=1.0, max_tokens=32)
    for aspect in ("complexity", "quality"):
        batch = RatingScorer(aspect, vllm_engine, sampling).score(ITEMS)
        assert not batch.failures, batch.failures
        values = [batch.values[i.id][f"{aspect}_score"] for i in ITEMS]
        assert all(v in {1.0, 2.0, 3.0, 4.0, 5.0, 6.0} for v in values)


def test_ifd_is_lower_when_the_instruction_explains_the_response(vllm_engine):
    batch = IFDScorer(vllm_engine).score(ITEMS)
    assert not batch.failures, batch.failures
    ifd = {k: v["ifd"] for k, v in batch.values.items()}
    assert all(math.isfinite(v) and v > 0 for v in ifd.values())
    # The question makes its own answer far more likely; an unrelated instruction helps much less.
    assert ifd["a"] < 1.0 and ifd["a"] < ifd["b"]


def test_ifd_from_vllm_matches_the_loss_computed_with_transformers(vllm_engine):
    import torch
    from transformers import AutoModelForCausalLM

    from synth.engines.base import ContinuationRequest
    from synth.engines.embedded import ensure_embedded_model

    scorer = IFDScorer(vllm_engine)
    context, answer = scorer.context(ITEMS[0]), ITEMS[0].output
    [scored] = vllm_engine.score_continuations([ContinuationRequest(context=context, continuation=answer)])
    tokenizer = scorer.tokenizer
    ctx = tokenizer.encode(context, add_special_tokens=False)
    cont = tokenizer.encode(answer, add_special_tokens=False)
    model = AutoModelForCausalLM.from_pretrained(ensure_embedded_model(), dtype=torch.float32)
    with torch.inference_mode():
        logits = model(torch.tensor([ctx + cont])).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    expected = [logprobs[len(ctx) + k - 1, t].item() for k, t in enumerate(cont)]
    assert len(scored.logprobs) == len(cont)
    # vLLM runs the model in bf16 here: per-token values agree loosely, the mean closely.
    assert sum(scored.logprobs) / len(cont) == pytest.approx(sum(expected) / len(cont), abs=0.15)


def test_hidden_state_embeddings_put_a_paraphrase_closer_than_another_topic():
    embedder = HiddenStateEmbedder(HiddenStateEmbeddingConfig(batch_size=2))
    vectors = unit_rows(embedder.embed([
        "Write a poem about the sea.\n\nThe sea is blue and deep.",
        "Write a poem about the ocean.\n\nThe ocean is blue and deep.",
        "Compute 2+2.\n\n4",
    ]))  # fmt: skip
    assert vectors.shape == (3, 576)
    assert 1 - vectors[0] @ vectors[1] < 1 - vectors[0] @ vectors[2]
