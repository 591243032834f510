"""The preference-pairs config: K sampled responses per instruction, graded by a judge, best vs worst."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from pydantic import Field

from synth.schemas.config import EngineConfig, SamplingConfig, _language, _Profiled, _sampling
from synth.schemas.records import Block, RunView


class PreferencesConfig(_Profiled):
    """Preference pairs for DPO: each source instruction gets `samples` responses (each with its own
    seed; spread over the run's engine and `response_engines`, in turn), each graded `judge_samples`
    times by the run's engine on a 5-point rubric (structured output, rationale first); the pair is
    the best graded response (chosen) against the worst (rejected).

    Defaults (`profile: paper`) are Self-Rewarding's recipe (Yuan et al. 2024): 4 responses at
    temperature 0.7, top-p 0.9; each graded 3 times and the grades averaged; the highest and lowest
    scoring make the pair, and a tie is no pair. `min_margin` can ask for more than "not a tie".
    `position_check` is off by default: that recipe (and UltraFeedback's) grades each response on its
    own, so there is no order to be biased by; when on, the chosen and rejected responses are also
    compared side by side in both orders (Zheng et al. 2023) and a pair whose verdict flips with the
    order, or that prefers the rejected one, is a reject."""

    _INPUT_FIELDS = ("source",)

    _PROFILE_DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = {
        "small-model": {
            # A 135M model rambles on; one greedy grade is all its judgement is worth.
            "response_sampling": {"temperature": 0.8, "top_p": 0.95, "max_tokens": 384},
            "judge_samples": 1,
            "judge_sampling": {"temperature": 0.0, "top_p": 1.0, "max_tokens": 256},
        }
    }

    source: str = Field(
        description="Instructions to answer: a dataset directory, or a JSONL, JSON array (Alpaca format), Parquet or "
        ".txt file."
    )
    language: str = _language()
    samples: int = Field(default=4, ge=2, le=64, description="Responses per instruction (K).")
    judge_samples: int = Field(
        default=3, ge=1, le=16, description="Grades per response, averaged (Self-Rewarding averages three)."
    )
    min_margin: float = Field(
        default=0.0,
        ge=0,
        le=4,
        description="The chosen response's score must beat the rejected one's by at least this; a tie is never "
        "a pair (0: any difference, as Self-Rewarding).",
    )
    position_check: bool = Field(
        default=False,
        description="Also compare chosen and rejected side by side, in both orders; a verdict that flips with the "
        "order (position bias) or prefers the rejected response is a reject.",
    )
    system_prompt: str = Field(default="", description="A system message for the responses; empty: none.")
    chunk_size: int = Field(default=64, ge=1, description="Source instructions per committed batch.")
    limit: int | None = Field(default=None, ge=1, description="Use only the first N source instructions.")
    response_engines: list[EngineConfig] = Field(
        default_factory=list,
        description="More engines that write responses (UltraFeedback's several models): response j of an "
        "instruction comes from engine j mod (1 + len(response_engines)), the run's engine first.",
    )
    response_sampling: SamplingConfig = _sampling(temperature=0.7, top_p=0.9, max_tokens=2048)
    judge_sampling: SamplingConfig = _sampling(temperature=0.7, top_p=0.9, max_tokens=256)
    compare_sampling: SamplingConfig = _sampling(temperature=0.0, top_p=1.0, max_tokens=256)
    seed: int = Field(default=0, description="Run seed (the responses' and grades' sampling).")


class Preferences(Block):
    """A preference pair's own block: the chosen response (also the record's `output`) and the
    rejected one, their mean grades (1-5), the judge's rationales and the models that wrote them.
    A reject that got as far as a pair (a tie, too small a margin, a verdict that flips) has it too.
    Datasets written before the block held these as flat columns of the same names."""

    column = "preferences"
    title = "Preference pair"
    card = """\
## Preference pairs

Records of the `preferences` generator are pairs for DPO-style training. Several responses
to the same instruction were sampled and each graded 1-5 by a judge model on a rubric;
the best and the worst graded make the pair (ties and too small margins are rejects).

| column | holds |
|---|---|
| `instruction`, `input` | the prompt (with `messages[:-1]`, any system turn) |
| `preferences.chosen`, `output` | the best graded response |
| `preferences.rejected` | the worst graded response |
| `preferences.chosen_score`, `.rejected_score` | their mean grades (1-5) |
| `preferences.chosen_rationale`, `.rejected_rationale` | the judge's reasons |
| `preferences.chosen_model`, `.rejected_model` | the models that wrote them |
| `source_id`, `parent_id` | the source instruction (`parent_id` when it is a record of a dataset) |

`synth export DIR --format dpo` writes `prompt` / `chosen` / `rejected` in the
conversational form TRL's `DPOTrainer` reads; other records have a null `preferences`.
"""
    section = False  # the record's page shows the pair side by side
    legacy = (
        "chosen",
        "rejected",
        "chosen_score",
        "rejected_score",
        "chosen_rationale",
        "rejected_rationale",
        "chosen_model",
        "rejected_model",
    )

    chosen: str | None = None
    rejected: str | None = None
    chosen_score: float | None = None
    rejected_score: float | None = None
    chosen_rationale: str | None = None
    rejected_rationale: str | None = None
    chosen_model: str | None = None
    rejected_model: str | None = None

    @classmethod
    def card_section(cls, runs: Sequence[RunView]) -> list[str]:
        return super().card_section(runs) + _flip_lines(runs)


def _flip_lines(runs: Sequence[RunView]) -> list[str]:
    """The side-by-side judge's position-flip rate, for runs that checked positions."""
    lines = []
    for run in runs:
        pairs = run.state.get("pairs")
        if not isinstance(pairs, dict) or not pairs.get("position_checked"):
            continue
        checked, flipped = pairs["position_checked"], pairs.get("flipped", 0)
        lines.append(
            f"Run `{run.run_id}` showed {checked} pairs to the judge side by side in both orders: the verdict "
            f"flipped with the order for {flipped} ({flipped / checked:.1%}), and those pairs are rejects."
        )
    return ["", *lines] if lines else []
