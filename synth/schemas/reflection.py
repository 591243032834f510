"""The reflection config: a teacher rewrites existing pairs, a student picks the rewrites to keep."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from synth.schemas.config import EngineConfig, SamplingConfig, _language, _Profiled, _sampling
from synth.schemas.records import Block


class ReflectionConfig(_Profiled):
    """Recycling pairs by reflection (Li et al. 2023, "Reflection-Tuning: Data Recycling Improves
    LLM Instruction-Tuning"; Li et al. 2024, "Selective Reflection-Tuning: Student-Selected Data
    Recycling").

    The teacher (the run's engine) reflects on each source pair three ways, greedily (temperature 0,
    up to 2048 tokens, as the reference code): on the instruction (critique, then a new instruction
    and its answer: variant Q), on the response (a better answer to the original instruction:
    variant A), and on the response of Q (variant QA). A reply that does not parse is asked once
    more (`reask`), then becomes a reject.

    `selection: student` (Selective Reflection-tuning, the default): the student (`student_engine`,
    default the run's engine) scores every variant by IFD, ppl(A|Q)/ppl(A), and reversed IFD,
    ppl(Q|A)/ppl(Q), the instruction guessed back from the answer. Where Q's IFD is above the
    original's (the new instruction is harder to follow), QA is written if its r-IFD is below Q's;
    otherwise A is written if its r-IFD is below the original's. The written pair's IFD and r-IFD
    must both be below 1. At most one pair per source pair; everything else is a reject with its
    scores. `selection: none` (Reflection-tuning, 2023) writes QA for every pair reflected on both."""

    _INPUT_FIELDS = ("source",)

    _PROFILE_DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = {
        "small-model": {
            # The embedded model's context is 2048 tokens: the prompt holds the pair, the reply must fit.
            "teacher_sampling": {"temperature": 0.0, "top_p": 1.0, "max_tokens": 512},
            "reask": 0,  # greedy on a local engine: asking again gives the same reply
            # The 135M model never writes the markers on its own (0 of 61 pairs measured): its replies
            # start with them, so it writes the new text straight away (and skips the critique).
            "prefill_markers": True,
        }
    }

    source: str = Field(
        description="Pairs to recycle: a dataset directory, or a JSONL, JSON array (Alpaca format) or Parquet file "
        "with instruction, input and output."
    )
    language: str = _language()
    selection: Literal["student", "none"] = Field(
        default="student",
        description="'student': the student model keeps a variant by its IFD and reversed IFD (Selective "
        "Reflection-tuning). 'none': every pair reflected on instruction and response is kept (Reflection-tuning).",
    )
    student_engine: EngineConfig | None = Field(
        default=None,
        description="The engine whose log-probabilities score the variants (it must score continuations: vLLM); "
        "None: the run's engine.",
    )
    student_max_tokens: int = Field(
        default=2048, ge=16, description="Tokens of each scored text the student reads at most (the reference's 2048)."
    )
    reask: int = Field(default=1, ge=0, le=5, description="Times a reply that does not parse is asked again.")
    prefill_markers: bool = Field(
        default=False,
        description="Start each teacher reply with its marker ([New Instruction], [Better Answer]) for the model to "
        "continue: for a model too small to follow the format (it then writes no critique).",
    )
    teacher_sampling: SamplingConfig = _sampling(temperature=0.0, top_p=1.0, max_tokens=2048)
    chunk_size: int = Field(default=64, ge=1, description="Source pairs per committed batch.")
    limit: int | None = Field(default=None, ge=1, description="Use only the first N source pairs.")
    seed: int = Field(default=0, description="Run seed (the teacher's sampling seeds).")


class Reflection(Block):
    """A recycled record's (or a reflection reject's) own block: which variant it is, the pair it
    was made from, and the student's scores of both (ratios of perplexities; None where not scored)."""

    column = "reflection"
    title = "Recycled from"
    card = """\
## Recycled pairs

Records of the `reflection` generator are source pairs a teacher model rewrote (Reflection-tuning):
`instruction` and `output` are the rewrite, and the `reflection` column holds the rest.

| `reflection.` field | holds |
|---|---|
| `variant` | `instruction+response` (new instruction, its answer reflected on) or `response` (a better answer) |
| `original_instruction`, `original_input`, `original_output` | the pair it was made from (`parent_id`: its id) |
| `ifd`, `r_ifd` | the student's IFD and reversed IFD of this pair (ratios of perplexities) |
| `original_ifd`, `original_r_ifd` | the same scores of the original pair |
| `teacher`, `student` | the models that rewrote and scored it |

The rejects hold every variant not written (stage `reflection`), with its scores and the reason.
"""

    variant: str  # "instruction+response" (QA), "response" (A), "instruction" (Q)
    original_instruction: str
    original_input: str = ""
    original_output: str = ""
    ifd: float | None = None
    r_ifd: float | None = None
    original_ifd: float | None = None
    original_r_ifd: float | None = None
    teacher: str = ""
    student: str = ""
