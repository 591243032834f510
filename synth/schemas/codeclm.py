"""CodecLM's config (Wang et al. 2024): seed instructions encoded into metadata, decoded into
instructions, made harder by Self-Rubrics and selected by Contrastive Filtering."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from synth.schemas.config import EngineConfig, SamplingConfig, _language, _Profiled, _sampling
from synth.schemas.records import Block


class CodeclmConfig(_Profiled):
    """CodecLM (Wang et al. 2024, "CodecLM: Aligning Language Models with Tailored Synthetic Data").

    The strong model (the run's engine) encodes each seed instruction into metadata, a use case and
    at most three skills (§4.1), decodes the metadata into `instructions_per_metadata` basic
    instructions, and writes `rubrics` rubrics with an improving action each for the metadata
    (Self-Rubrics, §4.2). Each instruction is answered by the strong model and by the target model
    (`target_engine`, default the run's engine), and the strong model scores both answers on a
    1-10 scale in both orders, averaged (§4.3). Where the quality gap (strong minus target) is
    larger than `threshold` the pair is kept: the instruction with the strong answer (or with the
    target's where the target wins by that much, `keep_target_wins`); otherwise one action, drawn
    at random, makes the instruction harder and it is tried again, for at most `iterations`
    iterations (the basic instruction counting as the first). What is still within the threshold
    then is a reject (stage `contrastive`) with its scores. Defaults are the paper's (§5.3, A.3)."""

    _INPUT_FIELDS = ("seeds",)

    _PROFILE_DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = {
        "small-model": {
            # The embedded model's context is 2048 tokens: the judge's prompt holds the instruction
            # and both answers, so each must stay well under a third of it.
            "generation_sampling": {"temperature": 0.7, "top_p": 1.0, "max_tokens": 384},
            "response_sampling": {"temperature": 0.7, "top_p": 1.0, "max_tokens": 512},
            # It does not write the judge's line of two scores (none of 8 instructions judged, measured), and
            # in JSON it puts blank lines between the tokens: 32 tokens cut most replies short.
            "structured_judge": True,
            "judge_sampling": {"temperature": 0.0, "top_p": 1.0, "max_tokens": 128},
        }
    }

    seeds: str | None = Field(
        default=None,
        description="Seed instructions to encode: a JSONL of tasks or instructions, or a .txt with one a line "
        "(Self-Instruct's formats); default: the built-in seed tasks of the language.",
    )
    limit: int | None = Field(default=None, ge=1, description="Use only the first N seed instructions.")
    instructions_per_metadata: int = Field(
        default=4, ge=1, le=64, description="Basic instructions decoded from each seed's metadata."
    )
    rubrics: int = Field(default=4, ge=1, le=16, description="Rubrics (and actions) written per metadata (paper: 4).")
    iterations: int = Field(
        default=4,
        ge=1,
        le=16,
        description="Iterations per instruction, the basic instruction counting as the first; each later one applies "
        "one Self-Rubrics action (paper: at most 4).",
    )
    threshold: float = Field(
        default=3.0, ge=0, le=9, description="Quality gap on the 1-10 scale a pair must exceed to be kept (paper: 3)."
    )
    keep_target_wins: bool = Field(
        default=True,
        description="Keep the target's answer where it beats the strong one by more than the threshold (the "
        "paper's implicit regularization); off: such instructions go back for improvement too.",
    )
    structured_judge: bool = Field(
        default=False,
        description="Have the judge answer as structured output (JSON with the two scores) instead of the "
        "paper's line of two numbers: for a model that does not keep to the format.",
    )
    target_engine: EngineConfig | None = Field(
        default=None, description="The target model whose answers are compared; None: the run's engine."
    )
    language: str = _language()
    chunk_size: int = Field(default=8, ge=1, description="Seed instructions per committed batch.")
    generation_sampling: SamplingConfig = _sampling(temperature=0.7, top_p=1.0, max_tokens=2048)
    response_sampling: SamplingConfig = _sampling(temperature=0.7, top_p=1.0, max_tokens=2048)
    judge_sampling: SamplingConfig = _sampling(temperature=0.0, top_p=1.0, max_tokens=32)
    seed: int = Field(default=0, description="Run seed (the models' sampling and the choice of actions).")


class Codeclm(Block):
    """A CodecLM record's (or a contrastive reject's) own block: the seed's metadata (use case, its
    skills joined by "; "), how many Self-Rubrics rounds were applied to the basic instruction (0:
    kept as decoded), the metadata's rubrics and the actions applied (one a line), and the
    contrastive filter's scores: the strong and target answers' averaged 1-10 scores, their gap
    (strong minus target), and whose answer the record holds."""

    column = "codeclm"
    title = "CodecLM"

    seed_id: str
    use_case: str
    skills: str
    rounds: int = 0
    basic_instruction: str = ""
    rubrics: str = ""
    actions: str = ""
    strong_score: float | None = None
    target_score: float | None = None
    gap: float | None = None
    answer: str = ""  # "strong" or "target": whose answer is the output
    strong_model: str = ""
    target_model: str = ""
