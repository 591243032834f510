"""The settings of Humpback's self-training loop (`synth generate backtranslate --self-train`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

# The paper tags its two sources with different system prompts so a model trained on both can be
# steered at inference time; these are ours.
SEED_SYSTEM = "Answer the way a helpful AI assistant would."
AUGMENTED_SYSTEM = "Answer drawing on knowledge found through a web search."


class SelfTrainConfig(BaseModel):
    """Li et al. 2023: fine-tune a backward model on the seed pairs (output -> instruction) and let
    it write instructions for the segments; fine-tune M0 on the seeds and let it grade every
    candidate; then `iterations` times, fine-tune M_k on the seeds plus the candidates the previous
    model graded at or above `min_score` and let M_k re-grade every candidate. The paper's recipe is
    one iteration (its M2 is the model trained on M1's selection, which `synth train` makes). Models are LoRA adapters merged into plain folders under `work` (the paper tunes
    every weight of LLaMA), each trained once: a folder whose base, data and settings match is
    reused."""

    model_config = ConfigDict(extra="forbid")

    iterations: int = Field(
        default=1,
        ge=0,
        le=10,
        description="Re-grading iterations after M0's grading. 1 is the paper's recipe: M0 grades, M1 (seeds plus "
        "M0's selection) re-grades, and M1's selection is the data the final model trains on.",
    )
    work: str | None = Field(
        default=None, description="Folder for the trained models and the iterations' candidates; None: OUT.self-train."
    )
    epochs: float = Field(default=3.0, gt=0, description="Training epochs of every model.")
    max_steps: int | None = Field(default=None, gt=0, description="Training steps of every model; overrides epochs.")
    learning_rate: float = Field(default=2e-4, gt=0, lt=1, description="Learning rate of the LoRA adapters.")
    batch_size: int = Field(default=8, ge=1, description="Training examples per optimizer step.")
    max_length: int = Field(default=1024, ge=16, description="Tokens per training example (longer are left out).")
    seed_system: str = Field(default=SEED_SYSTEM, description="System prompt that tags seed data.")
    augmented_system: str = Field(default=AUGMENTED_SYSTEM, description="System prompt that tags augmented data.")
