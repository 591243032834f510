"""Magpie's config (Xu et al. 2024): instructions sampled from an aligned model's own chat template."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from synth.schemas.config import SamplingConfig, _language, _max_batches, _Profiled, _sampling


class MagpieConfig(_Profiled):
    """Magpie (Xu et al. 2024): the model writes the user's messages itself, then answers them; no
    seeds needed.

    The model is given only the opening of a user turn of its chat template and writes the user's
    message; then it answers that message as an assistant, for `turns` turns.

    Defaults are the reference code's: user messages sampled at temperature 1 and top-p 1 (up to
    512 tokens, stopped at the first line break), responses greedy; no system prompt."""

    # No files to read; the target size and budget do not define the run's output.
    _IDENTITY_EXCLUDES = frozenset({"num_records", "max_batches"})

    _PROFILE_DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = {
        "small-model": {
            # A 135M model at temperature 1 writes noise; it needs a cooler, shorter query.
            "query_sampling": {"temperature": 0.8, "top_p": 0.95, "max_tokens": 128},
            "response_sampling": {"temperature": 0.0, "top_p": 1.0, "max_tokens": 384},
        }
    }

    num_records: int = Field(default=100, ge=1, description="Stop once this many records are kept.")
    max_batches: int | None = _max_batches()
    batch_size: int = Field(default=64, ge=1, description="Conversations started per batch.")
    turns: int = Field(default=1, ge=1, le=16, description="User and assistant turns per conversation.")
    system_prompt: str = Field(
        default="",
        description="A system message to steer the domain (e.g. 'You help with maths'); empty: none, as in the paper.",
    )
    template: str | None = Field(
        default=None,
        description="The text that opens a user turn, instead of the model's chat template (single-turn only), "
        "e.g. '<|im_start|>user\\n'.",
    )
    stop_at_newline: bool = Field(
        default=True, description="End a sampled user message at its first line break (the reference code's default)."
    )
    min_query_words: int = Field(
        default=3, ge=0, description="Shorter user messages are rejects (tokens: words, or characters in Chinese)."
    )
    language: str = _language()
    query_sampling: SamplingConfig = _sampling(temperature=1.0, top_p=1.0, max_tokens=512)
    response_sampling: SamplingConfig = _sampling(temperature=0.0, top_p=1.0, max_tokens=2048)
    seed: int = Field(default=0, description="Run seed (the model's sampling).")
