"""Greedy answers of a model folder to benchmark prompts, by one of two backends that take the same
rendered prompts and decode the same way (greedy, the same token limit and stop strings):

- `VLLMAnswers`: vLLM, loaded on the folder for this model's answers and closed after them (on a GPU
  the memory goes back before the next model trains); every prompt still to answer goes to the
  engine in chunks of `CHUNK`, so vLLM schedules them together. The default.
- `TransformersAnswers`: transformers' `generate` in batches of 8 on the model already loaded for
  the loss (no second copy of the weights); slow, but it needs no vLLM.

Prompts arrive rendered (the chat template applied by the caller, or a raw prefix to continue), so
both backends see the same text. vLLM leaves a matched stop string out of the answer and
transformers keeps it; the callers cut answers at their stop strings either way.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from synth.schemas import Sampling

OnBatch = Callable[[int, int, list[str]], None]  # (answered so far, total, this batch's answers)
Backend = Literal["vllm", "transformers"]
CHUNK = 256  # prompts per vLLM call: each call's answers are kept before the next (resume)


class Answers(Protocol):
    """Greedy answers to rendered prompts, in order; `on_batch` sees each batch as it is made."""

    def __call__(
        self, prompts: Sequence[str], max_new_tokens: int, stops: Sequence[str] = (), on_batch: OnBatch | None = None
    ) -> list[str]: ...


@dataclass(frozen=True)
class Answerer:
    """A model as a benchmark asks it: its `name` (in the score and the progress lines), the
    backend making its `answers`, the `tokenizer` whose chat template renders the prompts, how
    many of the benchmark's items it is asked (`limit`; None: all), the most tokens an answer may
    have, and where progress lines go (None: nowhere)."""

    name: str
    answers: Answers
    tokenizer: Any
    limit: int | None = None
    max_new_tokens: int = 512
    progress: Callable[[str], None] | None = None

    def say(self, line: str) -> None:
        if self.progress:
            self.progress(line)


class TransformersAnswers:
    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 8) -> None:
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size

    def __call__(
        self, prompts: Sequence[str], max_new_tokens: int, stops: Sequence[str] = (), on_batch: OnBatch | None = None
    ) -> list[str]:
        import torch

        tokenizer = self.tokenizer
        side = tokenizer.padding_side
        tokenizer.padding_side = "left"
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        out: list[str] = []
        try:
            for start in range(0, len(prompts), self.batch_size):
                chunk = list(prompts[start : start + self.batch_size])
                encoded = tokenizer(chunk, return_tensors="pt", padding=True).to(self.model.device)
                with torch.no_grad():
                    made = self.model.generate(
                        **encoded,
                        max_new_tokens=max_new_tokens,
                        do_sample=False,
                        pad_token_id=tokenizer.pad_token_id,
                        **({"stop_strings": list(stops), "tokenizer": tokenizer} if stops else {}),
                    )
                width = encoded["input_ids"].shape[1]
                new = tokenizer.batch_decode(made[:, width:], skip_special_tokens=True)
                out += new
                if on_batch:
                    on_batch(len(out), len(prompts), new)
        finally:
            tokenizer.padding_side = side
        return out


class VLLMAnswers:
    """Answers from an engine (vLLM's, from `vllm_answers`): raw prompts, greedy."""

    def __init__(self, engine: Any, chunk: int = CHUNK) -> None:
        self.engine, self.chunk = engine, chunk

    def __call__(
        self, prompts: Sequence[str], max_new_tokens: int, stops: Sequence[str] = (), on_batch: OnBatch | None = None
    ) -> list[str]:
        from synth.engines import ChatRequest

        greedy = Sampling(temperature=0.0, top_p=1.0, max_tokens=max_new_tokens)
        out: list[str] = []
        for start in range(0, len(prompts), self.chunk):
            requests = [
                ChatRequest(raw=p, sampling=greedy, stop=list(stops), tag="benchmark")
                for p in prompts[start : start + self.chunk]
            ]
            # A prompt the engine refuses (longer than its context, say) gets an empty answer,
            # which the benchmark scores as a failure.
            new = [c.text if c.finish_reason != "error" else "" for c in self.engine.chat(requests)]
            out += new
            if on_batch:
                on_batch(len(out), len(prompts), new)
        return out


@contextmanager
def vllm_answers(path: str, dtype: str = "auto", seed: int = 0, max_model_len: int = 4096) -> Iterator[VLLMAnswers]:
    """A vLLM engine on the model folder `path` for the time of the block, closed after it (within a
    time limit, then killed), taking prompt and answer up to `max_model_len` tokens (or the
    model's own context, if shorter). `dtype` "auto" takes the folder's own; give the dtype the other model
    of a comparison ran in (`answer_dtype`) so both decode in the same precision."""
    import gc

    from synth.engines import close_bounded
    from synth.engines.vllm_local import VLLMEngine
    from synth.schemas import VLLMEngineConfig

    gc.collect()  # a model the caller dropped: its memory goes back before vLLM takes its share
    if "torch" in sys.modules and sys.modules["torch"].cuda.is_available():
        sys.modules["torch"].cuda.empty_cache()
    length = min(max_model_len, _context_of(path) or max_model_len)
    # In this process: the answers are a loop with nothing beside it, and the engine loads in half
    # the time (unless another engine already runs in this process; then it gets a process).
    config = VLLMEngineConfig(model=path, dtype=dtype, seed=seed, max_model_len=length, in_process=True)  # type: ignore[arg-type]
    engine = VLLMEngine(config)
    try:
        yield VLLMAnswers(engine)
    finally:
        close_bounded(engine)


def _context_of(path: str) -> int | None:
    """The context length a model folder's config states, if it states one."""
    import json
    from pathlib import Path

    try:
        stated = json.loads((Path(path) / "config.json").read_text("utf-8")).get("max_position_embeddings")
    except (OSError, ValueError, AttributeError):
        return None
    return stated if isinstance(stated, int) and stated > 0 else None


def answer_dtype(answers: Answers) -> str:
    """The dtype a vLLM backend's model runs in ("bfloat16", ...); "auto" for any other backend."""
    engine = getattr(answers, "engine", None)
    llm = getattr(engine, "llm", None)
    dtype = getattr(getattr(llm, "model_config", None), "dtype", None)
    return str(dtype).removeprefix("torch.") if dtype is not None else "auto"


@contextmanager
def answers_for(
    backend: Backend, path: str, model: Any, tokenizer: Any, dtype: str = "auto", seed: int = 0
) -> Iterator[Answers]:
    """The answers of the model folder `path` by `backend`: transformers' on `model` (the folder,
    already loaded), or a vLLM engine's on the folder, in `dtype`, for the time of the block.
    Drop every other reference to `model` first when the backend is vLLM: it loads its own copy."""
    if backend == "transformers":
        if model is None:
            raise ValueError("the transformers backend answers with a loaded model; none was given")
        yield TransformersAnswers(model, tokenizer)
        return
    with vllm_answers(path, dtype, seed) as answers:
        yield answers
