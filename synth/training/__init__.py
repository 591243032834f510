"""Fine-tuning on generated data: supervised fine-tuning with LoRA (TRL's SFT trainer) merged into a
plain model folder that the vLLM engine loads, and a proxy evaluation of a dataset by the loss of a
model tuned on it. Beside `engines`: it uses `shards` to read datasets and the embedded model's
location from `engines`; Prefect stays in `synth.flows.training`.

    from synth.training import TrainingConfig, train
    folder = train(TrainingConfig(out="models/backward", direction="backward"), "data/seeds.jsonl")

Heavy libraries (torch, transformers, trl, peft) load when a run starts, not on import.
"""

from synth.training.config import EvaluationConfig, TrainingConfig, TrainingReport
from synth.training.data import Example, Examples, TrainingDataError, data_hash, load_examples, to_chat
from synth.training.model import TrainingSetupError

__all__ = [
    "Evaluation",
    "EvaluationConfig",
    "Example",
    "Examples",
    "TrainingConfig",
    "TrainingDataError",
    "TrainingReport",
    "TrainingSetupError",
    "data_hash",
    "evaluate_dataset",
    "load_examples",
    "read_report",
    "to_chat",
    "train",
    "up_to_date",
]


def __getattr__(name: str):  # the functions that need torch and friends load on first use
    if name in {"train", "up_to_date", "read_report"}:
        from synth.training import sft

        return getattr(sft, name)
    if name in {"evaluate_dataset", "Evaluation"}:
        from synth.training import evaluate

        return getattr(evaluate, name)
    raise AttributeError(f"module 'synth.training' has no attribute {name!r}")
