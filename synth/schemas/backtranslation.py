"""The configuration of instruction backtranslation (Humpback) and its self-training loop's hand-over."""

from __future__ import annotations

from pydantic import Field

from synth.schemas.config import SamplingConfig, _language, _RunConfig, _sampling
from synth.schemas.self_train import SelfTrainConfig


class BacktranslationConfig(_RunConfig):
    """Instruction backtranslation (Li et al. 2023, Humpback): segment, self-augment, self-curate."""

    _INPUT_FIELDS = ("docs", "seeds")  # the documents' path enters the run id on its own
    # The self-training loop's settings decide its models, whose weights enter its runs' ids.
    _IDENTITY_EXCLUDES = frozenset({"self_train"})

    docs: str = Field(description="Folder of .txt/.md/.html files, or a JSONL/Parquet file with a text field.")
    seeds: str | None = Field(
        default=None,
        description="Seed (instruction, output) pairs for the backward prompts: JSONL or a JSON array of objects "
        "with 'instruction', optional 'input', 'output' (Alpaca format); None: the built-in pairs. Pairs with an "
        "input or an instruction that refers to text not shown are skipped and counted.",
    )
    language: str = _language()
    text_field: str = Field(default="text", description="Text field or column of a JSONL/Parquet source.")
    min_chars: int = Field(default=120, ge=1, description="A shorter segment is not used.")
    max_chars: int = Field(default=2000, ge=1, description="Documents are cut into segments of at most this length.")
    # A segment beyond any of these shares is not used (the short-line share only with 4 lines or more).
    max_short_line_share: float = Field(default=0.5, ge=0, le=1, description="Most lines under 4 words (share).")
    max_upper_share: float = Field(default=0.4, ge=0, le=1, description="Most capitals (share of letters).")
    max_symbol_share: float = Field(default=0.25, ge=0, le=1, description="Most symbols (share, not alphanumeric).")
    max_link_share: float = Field(default=0.5, ge=0, le=1, description="Most characters in links and URLs (share).")
    rounds: int = Field(default=1, ge=1, description="Iterations; curated pairs join the next round's few-shot pool.")
    min_score: int = Field(
        default=5, ge=1, le=5, description="Keep pairs graded at least this (4 is the permissive option)."
    )
    num_demos: int = Field(default=3, ge=0, description="Few-shot (output, instruction) pairs per backward prompt.")
    chunk_size: int = Field(default=128, ge=1, description="Segments per committed batch.")
    max_segments: int | None = Field(default=None, ge=1, description="Use only the first N segments.")
    # The paper samples instructions with nucleus sampling at p = 0.9; the token cap leaves room for a
    # long instruction (one cut off at it is a reject with that reason).
    augment_sampling: SamplingConfig = _sampling(temperature=0.7, top_p=0.9, max_tokens=512)
    grade_sampling: SamplingConfig = _sampling(temperature=0.0, top_p=1.0, max_tokens=256)
    seed: int = Field(default=0, description="Run seed (the model's sampling).")
    self_train: SelfTrainConfig | None = Field(
        default=None, description="Run the paper's self-training loop (trained backward model and graders)."
    )
