"""Configuration of the curation chain: which filters run, in which order, with which settings."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from synth.schemas.config import SamplingConfig, _sampling, _Strict


class HeuristicsConfig(_Strict):
    """Record-level rules. Word counts are tokens of `synth.filters.tokens.words`: whitespace-separated
    words, and each character of a script written without spaces (Chinese, Japanese, Thai...)."""

    enabled: bool | None = Field(
        default=None,
        description="Empty (auto): off in a generator's `paper` profile, whose paper applies its own filters "
        "while it generates (the chain then only removes duplicates), on in other profiles and in synth curate; "
        "true or false to choose.",
    )
    language: str | None = Field(
        default=None,
        pattern=r"^[a-z]{2}$",
        description=(
            "The data's language, an ISO 639-1 code: it picks the refusal phrases (ours exist for 'en' "
            "and 'zh'; any other language has none, so the refusal rule passes everything). Empty: the "
            "run's language (a generator's --language; English for synth curate unless --language)."
        ),
    )
    min_instruction_words: int = Field(default=3, ge=0)
    max_instruction_words: int = Field(default=500, ge=1)
    min_output_words: int = Field(default=1, ge=0)
    max_output_words: int = Field(default=4000, ge=1)
    refusals: bool = True
    non_text: bool = True
    placeholders: bool = True
    output_equals_input: bool = True
    cut_off: bool = True
    max_symbol_share: float = Field(default=0.5, ge=0, le=1)
    max_repeated_line_share: float = Field(default=0.5, ge=0, le=1)


class MinHashConfig(_Strict):
    """Near-duplicate removal. The scheme and parameters are stored with the dataset's index; an
    index built with others is refused (rebuild it with `synth curate DIR --rebuild-index`)."""

    enabled: bool = True
    shingle: Literal["word", "char"] = "word"
    ngram: int = Field(default=3, ge=1)
    lowercase: bool = True
    num_perm: int = Field(default=128, ge=16, le=1024)
    threshold: float = Field(default=0.8, gt=0, lt=1)
    verify: Literal["exact", "estimate"] = Field(
        default="exact",
        description=(
            "How an LSH candidate is confirmed: 'exact' by the Jaccard similarity of the two shingle sets "
            "(kept with the index, 4 bytes per distinct shingle), 'estimate' by the share of equal "
            "signature values (the classic MinHash estimate, off by about 0.035 at 0.8 with 128 permutations)."
        ),
    )
    seed: int = 1
    backend: Literal["local", "redis"] = "local"
    redis_url: str = "redis://127.0.0.1:6379/0"
    namespace: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9._-]{1,128}$",
        description=(
            "Redis backend: the name of the shared index. Default: the dataset's own id (made once when "
            "the dataset is created), so no two datasets share an index by accident. Give several "
            "datasets the same namespace to deduplicate them against each other on purpose."
        ),
    )


class NoveltyConfig(_Strict):
    """ROUGE-L novelty of instructions against a reference pool (the dataset's own, by default)."""

    enabled: bool = False
    threshold: float = Field(default=0.7, ge=0, le=1)
    reference: str | None = Field(
        default=None, description="A file of instructions; default: the dataset's kept records."
    )


TextField = Literal["instruction", "input", "output"]
_TEXT_FIELDS: list[TextField] = ["instruction", "input", "output"]


class DecontaminationConfig(_Strict):
    benchmarks: list[str] = Field(
        default_factory=list, description="Files of benchmark prompts (JSONL, Parquet or text)."
    )
    ngram: int = Field(default=13, ge=1, description="Words per n-gram; in scripts written without spaces, characters.")
    fields: list[TextField] = Field(default_factory=lambda: list(_TEXT_FIELDS))


class JudgeConfig(_Strict):
    enabled: bool = False
    rubric: str | None = Field(default=None, description="A rubric file; default: ours.")
    threshold: int = Field(default=4, ge=1, le=5)
    sampling: SamplingConfig = _sampling(temperature=0.0, top_p=1.0, max_tokens=256)


class LanguageCheckConfig(_Strict):
    """Detect each record's language (the `language` column) and drop those in another language
    than the run's (instruction, or output unless the instruction names the output's language)."""

    enabled: bool | None = Field(
        default=None,
        description="Empty (auto): on for runs in a language other than English, where a model drifting back "
        "to English is the commonest failure; true or false to choose.",
    )


class AbilitiesConfig(_Strict):
    """Tag each record with the ability it exercises (the `ability` column), by the model."""

    enabled: bool | None = Field(
        default=None,
        description="Empty (auto): on for runs in a language other than English (the ability mix the DoIT "
        "study of Chinese instruction data measures); true or false to choose.",
    )
    taxonomy: str | None = Field(
        default=None, description="A JSON/YAML file of {ability key: definition}; default: our ten abilities."
    )
    sampling: SamplingConfig = _sampling(temperature=0.0, top_p=1.0, max_tokens=32)


class CurationConfig(_Strict):
    """The chain, cheap first: heuristics, language, exact dedup, near dedup, novelty,
    decontamination, ability tags, judge."""

    language: str | None = Field(
        default=None,
        pattern=r"^[a-z]{2,3}$",
        description="The data's language (ISO 639-1); empty: the run's (a generator's --language), English for "
        "synth curate unless --language.",
    )
    heuristics: HeuristicsConfig = Field(default_factory=HeuristicsConfig)
    language_check: LanguageCheckConfig = Field(default_factory=LanguageCheckConfig)
    abilities: AbilitiesConfig = Field(default_factory=AbilitiesConfig)
    mixture: dict[str, int] = Field(
        default_factory=dict,
        description="Kept records wanted per ability ({ability key: count}); a record of an ability whose target "
        "the dataset already meets is a reject (stage mixture). Setting it turns the ability tags on; a "
        "Self-Instruct run stops when every target is met (its num_records becomes their sum).",
    )
    exact_dedup: bool = True
    minhash: MinHashConfig = Field(default_factory=MinHashConfig)
    novelty: NoveltyConfig = Field(default_factory=NoveltyConfig)
    decontamination: DecontaminationConfig = Field(default_factory=DecontaminationConfig)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)

    @model_validator(mode="after")
    def _mixture_needs_tags(self) -> CurationConfig:
        if self.mixture and self.abilities.enabled is False:
            raise ValueError("mixture needs the ability tags (abilities.enabled is false)")
        if bad := sorted(k for k, n in self.mixture.items() if n < 0):
            raise ValueError(f"mixture: negative target for {', '.join(bad)}")
        return self

    def runs_heuristics(self, profile: str | None = None) -> bool:
        """Whether the heuristics run: as set, else (auto) for every chain but that of a generator
        run in its `paper` profile (`profile` is None for a chain outside a generator run)."""
        enabled = self.heuristics.enabled
        return enabled if enabled is not None else profile != "paper"

    def data_language(self, run_language: str = "en") -> str:
        """The language the chain expects: the config's, else the run's."""
        return self.language or run_language

    def checks_language(self, run_language: str = "en") -> bool:
        """Whether the language check runs (auto: for data not in English)."""
        enabled = self.language_check.enabled
        return enabled if enabled is not None else self.data_language(run_language) != "en"

    def tags_abilities(self, run_language: str = "en") -> bool:
        """Whether records are tagged with abilities (auto: for data not in English, or a mixture)."""
        enabled = self.abilities.enabled
        if self.mixture:
            return True
        return enabled if enabled is not None else self.data_language(run_language) != "en"

    def uses_model(self, run_language: str = "en") -> bool:
        """Whether the chain calls a model (the judge, ability tags)."""
        return self.judge.enabled or self.tags_abilities(run_language)


# A chain that drops nothing: every record stays, whatever a filter would say of it (candidates
# between self-training iterations, a selection written as chosen).
KEEP_ALL = CurationConfig(
    heuristics=HeuristicsConfig(enabled=False),
    language_check=LanguageCheckConfig(enabled=False),
    abilities=AbilitiesConfig(enabled=False),
    exact_dedup=False,
    minhash=MinHashConfig(enabled=False),
)
