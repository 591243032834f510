"""What a training run and a proxy evaluation are asked to do, and what a training run leaves behind.

The configs are data: they validate (unknown keys are errors), and the fields that change the
trained weights hash, with the base model and the data, into the key that decides whether a model
folder is up to date (`TrainingConfig.hyperparameters`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

Direction = Literal["forward", "backward"]
Device = Literal["auto", "cpu", "cuda"]
SaveDtype = Literal["auto", "float32", "bfloat16", "float16"]

# Attention projections of Llama, Mistral, Qwen and most decoder-only models since.
DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
# Fields that do not change the trained weights, left out of the cache key.
_NOT_HYPERPARAMETERS = {"out", "base", "log_every", "device", "threads"}


Stored = TypeVar("Stored", bound=BaseModel)


def identity_key(identity: dict[str, Any]) -> str:
    """sha256 of `identity` as sorted JSON: the key a stored result (a model's training report, a
    dataset's evaluation) carries, so that one made from the same inputs is reused."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def read_stored(path: Path, model: type[Stored]) -> Stored | None:
    """The JSON file `path` as `model`, or None where there is none (or it does not read)."""
    try:
        return model.model_validate_json(path.read_bytes())
    except (OSError, ValueError):
        return None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TrainingConfig(_Strict):
    """One supervised fine-tuning run with LoRA, merged into a plain model folder at `out`.

    `base` is a local model folder (or a name already in the local Hugging Face cache; nothing is
    downloaded); None is the embedded model. `max_steps` overrides `epochs`. `eval_share` holds out
    that share of the examples (chosen with `seed`) to report an eval loss on. `save_dtype` "auto"
    saves the weights in the dtype they were trained in (float32 on a CPU, bfloat16 on CUDA): a
    short run's updates are smaller than bfloat16's rounding step and would partly vanish in it.
    """

    out: Path
    base: str | None = None
    direction: Direction = "forward"
    epochs: float = Field(default=3.0, gt=0)
    max_steps: int | None = Field(default=None, gt=0)
    learning_rate: float = Field(default=2e-4, gt=0, lt=1)
    lora_r: int = Field(default=16, ge=1)
    lora_alpha: int = Field(default=32, ge=1)
    lora_dropout: float = Field(default=0.05, ge=0, lt=1)
    lora_targets: list[str] | Literal["all-linear"] = Field(default_factory=lambda: list(DEFAULT_LORA_TARGETS))
    batch_size: int = Field(default=8, ge=1)
    grad_accum: int = Field(default=1, ge=1)
    max_length: int = Field(default=1024, ge=16)
    warmup_ratio: float = Field(default=0.0, ge=0, lt=1)
    gradient_checkpointing: bool = False
    seed: int = 0
    eval_share: float = Field(default=0.0, ge=0, lt=1)
    save_dtype: SaveDtype = "auto"
    device: Device = "auto"
    threads: int | None = Field(default=None, ge=1)  # CPU threads for torch; None: its default (all cores)
    log_every: int = Field(default=10, ge=1)

    @model_validator(mode="after")
    def _targets_named(self) -> TrainingConfig:
        if isinstance(self.lora_targets, list) and not [t for t in self.lora_targets if t.strip()]:
            raise ValueError("lora_targets: name at least one module (or 'all-linear')")
        return self

    def hyperparameters(self) -> dict[str, Any]:
        """Everything that changes the trained weights, besides the base model and the data."""
        return self.model_dump(mode="json", exclude=_NOT_HYPERPARAMETERS)


class EvaluationConfig(_Strict):
    """A proxy evaluation: fine-tune `base` on a dataset with a budget that follows the data and a
    fixed seed, then compare the base's and the tuned model's per-token loss on reference pairs
    (and their benchmark scores).

    The budget is `epochs` over the dataset (default one: a step per `batch_size` records), or
    `max_steps` steps when that is set (it overrides `epochs`). With the embedded model on 2 idle
    CPU cores a step of 8 examples of about 100 tokens takes about 9 seconds (about 90 training
    tokens/s), so one epoch over 1,000 records takes about 20 minutes. `model_dir` keeps
    the tuned model there (and reuses it when it is up to date); by default it is removed after
    scoring.
    """

    base: str | None = None
    epochs: float = Field(default=1.0, gt=0)
    max_steps: int | None = Field(default=None, gt=0)  # overrides epochs
    learning_rate: float = Field(default=2e-4, gt=0, lt=1)
    lora_r: int = Field(default=16, ge=1)
    lora_alpha: int = Field(default=32, ge=1)
    batch_size: int = Field(default=8, ge=1)
    max_length: int = Field(default=512, ge=16)
    seed: int = 0
    # Fine-tune this many times (seeds `seed` onward, the same records): the tuned figures are the
    # means, with their spread.
    seeds: int = Field(default=1, ge=1)
    device: Device = "auto"
    threads: int | None = Field(default=None, ge=1)
    model_dir: Path | None = None
    log_every: int = Field(default=10, ge=1)
    # Benchmarks scored on both models besides the loss: "humaneval" (pass@1, greedy, programs run
    # in the sandbox), "ifbench" (instruction following checked by programs) or the path of a JSONL
    # file in the IFEval format; `benchmark_limit` scores the first N problems or prompts only.
    benchmarks: list[str] = Field(default_factory=list)
    benchmark_limit: int | None = Field(default=None, ge=1)
    benchmark_max_tokens: int = Field(default=512, ge=1)
    benchmark_chat: bool = False  # ask each problem in the chat template (chat models) instead of continuing it
    # What makes the benchmark answers: vLLM (a model at a time, closed before the next trains), or
    # transformers' `generate` on the model loaded for the loss (slow; needs no vLLM).
    benchmark_engine: Literal["vllm", "transformers"] = "vllm"
    isolation: Literal["bubblewrap", "none-unsafe"] = "bubblewrap"

    @model_validator(mode="after")
    def _known_benchmarks(self) -> EvaluationConfig:
        for name in self.benchmarks:
            if name not in ("humaneval", "ifbench") and not name.endswith(".jsonl"):
                raise ValueError(f"benchmark {name!r}: expected humaneval, ifbench or an IFEval-format .jsonl file")
        return self

    def training(self, out: Path) -> TrainingConfig:
        """The training run this evaluation makes: forward, no held-out share, no dropout (the same
        seed gives the same model), saved in float32 so the tuned loss is the loss of what trained."""
        return TrainingConfig(
            out=out,
            base=self.base,
            direction="forward",
            epochs=self.epochs,
            max_steps=self.max_steps,
            learning_rate=self.learning_rate,
            lora_r=self.lora_r,
            lora_alpha=self.lora_alpha,
            lora_dropout=0.0,
            batch_size=self.batch_size,
            max_length=self.max_length,
            seed=self.seed,
            save_dtype="float32",
            device=self.device,
            threads=self.threads,
            log_every=self.log_every,
        )

    def instruction_benchmarks(self) -> list[str]:
        """The benchmarks scored by instruction following (`ifbench` and IFEval-format files)."""
        return [b for b in self.benchmarks if b != "humaneval"]

    def budget(self) -> str:
        """The training budget in words."""
        if self.max_steps is not None:
            return f"{self.max_steps} steps"
        return f"{self.epochs:g} epoch{'' if self.epochs == 1 else 's'}"

    def identity(self) -> dict[str, Any]:
        """What decides the numbers, besides the base, the data and the reference."""
        exclude = {"base", "model_dir", "log_every", "device", "threads", "isolation"}
        if self.seeds == 1:  # evaluations from before several seeds keep their key
            exclude.add("seeds")
        if not self.benchmarks:  # evaluations from before the benchmarks keep their key
            exclude |= {"benchmarks", "benchmark_limit", "benchmark_max_tokens", "benchmark_chat", "benchmark_engine"}
        return self.model_dump(mode="json", exclude=exclude)


class DataSummary(_Strict):
    """What a training run read: its source, the hash of its examples and how they were used."""

    source: str
    hash: str
    examples: int
    skipped: int = 0  # records of a dataset without an instruction or output
    train_examples: int
    eval_examples: int
    truncated: int = 0  # longer than max_length: cut at the end
    dropped: int = 0  # nothing of the completion left within max_length


class TrainingReport(_Strict):
    """`training.json` in a trained model folder."""

    format: int = 1
    key: str
    base: str
    base_path: str
    direction: Direction
    data: DataSummary
    hyperparameters: dict[str, Any]
    steps: int
    epochs: float
    train_loss: float  # mean over the run
    final_train_loss: float  # mean over the last logging window
    eval_loss: float | None = None  # mean per completion token on the held-out share
    eval_tokens: int = 0
    tokens: int  # tokens the model was trained on (prompt and completion)
    seconds: float  # the training loop
    tokens_per_second: float
    total_seconds: float  # loading, training, merging and saving
    device: str
    dtype: str
    save_dtype: str
    versions: dict[str, str]
    created_at: str
