"""Unnatural Instructions' config (Honovich et al. 2022): a fourth example elicited from three."""

from __future__ import annotations

from pydantic import Field

from synth.schemas.config import SamplingConfig, _language, _Profiled, _sampling
from synth.schemas.records import Block


class UnnaturalConfig(_Profiled):
    """Unnatural Instructions (Honovich et al. 2022, "Unnatural Instructions: Tuning Language Models
    with (Almost) No Human Labor").

    Each prompt shows three demonstrations of (instruction, input, constraints), one of the seed
    pool's sets of three, the sets taken in turn, and asks for a fourth, sampled with nucleus
    sampling (p = 0.99). Candidates missing a field, copying a demonstration, or repeating an
    instruction and input already generated are rejects. The output is then written greedily from
    instruction, input and constraints; the constraints are kept in the record's `unnatural` block,
    not in its training text. With `expand` each kept example's instruction is paraphrased
    (`paraphrases` times, from two demonstrations), keeping a {INPUT} slot for the same input."""

    _INPUT_FIELDS = ("seeds",)
    _IDENTITY_EXCLUDES = frozenset({"num_records"})  # a larger number of prompts extends the run

    seeds: str | None = Field(
        default=None,
        description="Seed examples: a JSONL file of objects with instruction, input and constraints, read in sets "
        "of three (file order); default: the built-in 15 (5 sets) of the language.",
    )
    num_records: int = Field(default=100, ge=1, description="Core examples to ask for (one prompt each).")
    batch_size: int = Field(default=64, ge=1, description="Prompts per committed batch.")
    expand: bool = Field(default=True, description="Add paraphrases of each kept instruction (the paper's full set).")
    paraphrases: int = Field(default=2, ge=1, le=16, description="Paraphrases asked for per core example.")
    language: str = _language()
    example_sampling: SamplingConfig = _sampling(temperature=1.0, top_p=0.99, max_tokens=512)
    output_sampling: SamplingConfig = _sampling(temperature=0.0, top_p=1.0, max_tokens=512)
    paraphrase_sampling: SamplingConfig = _sampling(temperature=1.0, top_p=0.99, max_tokens=256)
    seed: int = Field(default=0, description="Run seed (the model's sampling).")


class Unnatural(Block):
    """An Unnatural Instructions record's own block: the output constraints its prompt showed (kept
    here, not in the training text), its core example (its own id on a core record), which
    paraphrase it is (0: the core example), the seed set its core prompt showed, and a paraphrase's
    wording with its {INPUT} slot."""

    column = "unnatural"
    title = "Unnatural Instructions"

    constraints: str
    core_id: str
    paraphrase: int = 0
    seed_set: int = 0
    template: str = ""
