"""Prefect flows around fine-tuning: `train_flow` (a model folder from a dataset or a file) and
`evaluate_flow` (a dataset's proxy loss). The work is in `synth.training`; a flow adds the run in the
Prefect UI and sends progress lines to the run's log. Flows take paths, not records: parameters
travel to the Prefect server. No `log_prints`: `datasets` hashes functions through dill, which
disassembles them with `print` into a captured stdout, and Prefect's print patch would log it all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from synth.training import EvaluationConfig, TrainingConfig


def _say() -> Any:
    logger = get_run_logger()
    return lambda line: logger.info("%s", line)


@flow(name="train")
def train_flow(config: TrainingConfig, data: str) -> str:
    """Fine-tune `config.base` on `data` (a dataset directory, or a JSONL or Parquet file) into the
    model folder `config.out`; an up-to-date folder is kept as it is. Returns the folder."""
    from synth.training import train

    return str(train(config, Path(data), progress=_say()))


@flow(name="evaluate")
def evaluate_flow(dataset: str, reference: str | None, config: EvaluationConfig, force: bool = False) -> dict[str, Any]:
    """The proxy evaluation of a dataset against reference pairs; writes `evaluation.json` beside its
    manifest and returns its content."""
    from synth.training import evaluate_dataset

    return evaluate_dataset(dataset, reference, config, force=force, progress=_say()).model_dump(mode="json")
