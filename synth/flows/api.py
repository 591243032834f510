"""Entry points for the command line (or a script) that are not flows themselves: readying the
process to run flows, and curating a dataset or a file. Cheap to import: heavy modules load inside."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from synth.evaluation.calibration import CalibrationReport, Labelled
    from synth.flows.curate import CurateFileSummary
    from synth.schemas import EngineConfig
    from synth.schemas.curation import CurationConfig, JudgeConfig
    from synth.shards.record_files import RecordsFile


# Libraries whose deprecation and future-change notices are about their own internals, not ours.
_NOISY_MODULES = r"(torch|transformers|vllm|triton|accelerate|peft|trl|ray|numba)(\.|$)"


def verbose() -> bool:
    """Whether library output should show: `synth -v`, or SYNTH_DEBUG=1."""
    return any(os.environ.get(v, "").lower() in {"1", "true", "yes"} for v in ("SYNTH_VERBOSE", "SYNTH_DEBUG"))


def prepare_process(out: str | Path | None = None) -> None:
    """Ready this process to run flows: its helper processes end with it, and libraries stay quiet
    (their warnings and notices show with `-v`; our own log lines and errors always do). What the
    model runtime's own processes print (native warnings, loading bars) goes to `library.log` in
    the dataset `out`, or in synth's cache directory when there is none."""
    import warnings

    from synth.engines.base import LIBRARY_LOG_ENV
    from synth.engines.embedded import cache_root
    from synth.flows.lifeline import hold_lifeline
    from synth.shards.layout import LIBRARY_LOG

    hold_lifeline()  # the temporary Prefect server and vLLM's processes end with this one
    loud = verbose()
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "INFO" if loud else "ERROR")
    if not loud:
        for category in (DeprecationWarning, FutureWarning, UserWarning):
            warnings.filterwarnings("ignore", category=category, module=_NOISY_MODULES)
        # Processes started fresh (vLLM's workers once torch is loaded, as after fine-tuning)
        # do not inherit the filters above; they read this.
        os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning,ignore::DeprecationWarning")
        os.environ.setdefault("TQDM_DISABLE", "1")  # libraries' loading bars (weights, datasets); ours stay
        logging.getLogger("vllm").setLevel(logging.ERROR)  # its notices reach Prefect's handler otherwise
        # Prefect's own notices (its temporary server starting and stopping); runs still log.
        # Prefect sets its loggers' levels from its logging config when a flow first runs, and
        # reads these to override it; the calls below hold until then.
        os.environ.setdefault("PREFECT_LOGGING_LOGGERS_PREFECT_LEVEL", "WARNING")
        logging.getLogger("prefect").setLevel(logging.WARNING)
        for name in ("prefect.flow_runs", "prefect.task_runs"):
            os.environ.setdefault(f"PREFECT_LOGGING_LOGGERS_{name.upper().replace('.', '_')}_LEVEL", "INFO")
            logging.getLogger(name).setLevel(logging.INFO)
        log_dir = Path(out) if out is not None else cache_root() / "logs"
        os.environ[LIBRARY_LOG_ENV] = str((log_dir / LIBRARY_LOG).absolute())
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # A task run outside a flow run (a selection, a curated file) has no flow run to send its log
    # lines to; Prefect warns about each. The lines still reach the terminal.
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
    # A local run's temporary Prefect server would try to send usage data and log its failure.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Prefect gives its temporary server 20 s to start; a busy 2-core laptop can take longer.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    logging.getLogger("httpx").setLevel(logging.WARNING)


def with_curate_options(
    config: CurationConfig, benchmarks: Sequence[str | Path] = (), judge: bool = False, language: str | None = None
) -> CurationConfig:
    """`config` (unchanged) plus benchmark files to decontaminate against, with `judge` the judge
    switched on, and the data's `language`, as `synth curate --benchmark ... --judge --language`
    asks."""
    config = config.model_copy(deep=True)
    if language is not None:
        config.language = language
    config.decontamination.benchmarks += [str(b) for b in benchmarks]
    if judge:
        config.judge.enabled = True
    return config


def curate(
    target: str | Path | RecordsFile,
    config: CurationConfig,
    *,
    out: str | Path | None = None,
    engine: EngineConfig | None = None,
    wait: float = 0,
    rebuild_index: bool = False,
) -> CurateFileSummary:
    """Curate a dataset directory in place (`out` is None; its MinHash index is always rebuilt
    afterwards), or a JSONL/Parquet file of records into the dataset `out` (its index rebuilt first
    with `rebuild_index`; a `RecordsFile` is one checked already). `engine` is the judge's model,
    built here; returns the run's summary."""
    from synth.engines import get_engine
    from synth.flows.curate import curate_dataset, curate_file
    from synth.shards.record_files import RecordsFile

    model = get_engine(engine) if engine is not None else None
    if not isinstance(target, RecordsFile) and Path(target).is_dir():
        return curate_dataset(target, config, engine=model, wait=wait)
    if out is None:
        raise ValueError(f"{target}: curating a file needs a dataset to write into (out)")
    return curate_file(target, out, config, engine=model, wait=wait, rebuild_index=rebuild_index)


def judge_check(items: Sequence[Labelled], judge: JudgeConfig, engine: EngineConfig) -> CalibrationReport:
    """Grade `items` with the judge `judge` configures on the model `engine` names (built here and
    closed again), and report how well its scores separate the labels (`synth.evaluation.calibration`)."""
    from synth.engines import engines_opened, get_engine
    from synth.evaluation.calibration import grade, report
    from synth.filters.judge import JudgeFilter

    with engines_opened():
        judged = JudgeFilter(judge, get_engine(engine))
        scores = grade(items, judged)
    return {
        **report(items, scores, judge.threshold),
        "judge_model": judged.engine.model_name,
        "judge_rubric": judged.rubric_hash,
    }
