"""Supervised fine-tuning with LoRA through TRL's SFT trainer, merged into a plain model folder.

`train(config, data)` is the whole of it for a caller: examples in (a dataset directory, a JSONL or
Parquet file, or records in memory), a model folder out, with `training.json` beside the weights.
The folder is written under a temporary sibling name and renamed into place only when complete,
so a killed run leaves no half-written model. A folder whose `training.json` carries the same key
(base model, data, direction, hyperparameters) is up to date and is not trained again.
"""

from __future__ import annotations

import fcntl
import logging
import os
import random
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from synth.shards.atomic import fsync_dir
from synth.training.config import DataSummary, TrainingConfig, TrainingReport, identity_key, read_stored
from synth.training.data import Example, Examples, examples_from, load_examples
from synth.training.model import (
    REPORT,
    Base,
    EncodedSet,
    TrainingSetupError,
    check_out,
    completion_loss,
    encode_examples,
    encode_for,
    load_model,
    resolve_base,
    working_on,
)
from synth.training.progress import ProgressLog

log = logging.getLogger(__name__)

Data = str | Path | Examples | Sequence[Any]
Say = Callable[[str], None]


def read_examples(data: Data) -> Examples:
    """The examples `data` holds: a path is read from disk, anything else taken as records."""
    if isinstance(data, Examples):
        return data
    if isinstance(data, str | Path):
        return load_examples(data)
    return examples_from(data)


def training_key(config: TrainingConfig, base: Base, data_hash: str) -> str:
    """What decides the trained weights, hashed: the base model's files, the data, the direction
    and every hyperparameter."""
    return identity_key({"format": 1, "base": base.fingerprint, "data": data_hash, **config.hyperparameters()})


def read_report(folder: str | Path) -> TrainingReport | None:
    """The `training.json` of a model folder, or None where there is none (or it does not read)."""
    return read_stored(Path(folder) / REPORT, TrainingReport)


def _has_weights(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))


def up_to_date(config: TrainingConfig, data: Data) -> bool:
    """Whether `config.out` already holds the model this config would train on `data`."""
    report = read_report(config.out)
    if report is None or not _has_weights(Path(config.out)):
        return False
    return report.key == training_key(config, resolve_base(config.base), read_examples(data).hash())


def train(config: TrainingConfig, data: Data, progress: Say | None = None) -> Path:
    """Fine-tune `config.base` on `data` and write the merged model folder `config.out`; returns it.

    `progress` receives one line at a time (default: this module's logger). Raises
    TrainingDataError for data that cannot be used and TrainingSetupError for a base model, device
    or output folder that cannot be used, before anything is loaded.
    """
    say = progress or log.info
    started = time.monotonic()
    examples = read_examples(data)
    base = resolve_base(config.base)
    key = training_key(config, base, examples.hash())
    out = Path(config.out).absolute()
    check_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with _locked(out):
        report = read_report(out)
        if report is not None and report.key == key and _has_weights(out):
            say(f"{out}: up to date (same base, data and settings); not trained again")
            return out
        check_out(out)
        _remove_leftovers(out)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.training-", suffix=".tmp", dir=out.parent))
        try:
            with working_on(config.device, config.threads) as (device, dtype):
                report = _train_into(tmp, config, examples, base, key, device, dtype, say, started)
            _publish(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    eval_part = f", eval loss {report.eval_loss:.4f}" if report.eval_loss is not None else ""
    say(
        f"trained {report.steps} steps in {report.seconds:.1f} s ({report.tokens_per_second:.0f} tokens/s): "
        f"train loss {report.final_train_loss:.4f}{eval_part}; model in {out}"
    )
    return out


@contextmanager
def _locked(out: Path) -> Iterator[None]:
    """One training run per model folder at a time; a second one waits, then finds it up to date."""
    with open(out.parent / f".{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _remove_leftovers(out: Path) -> None:
    """Temporary folders of runs that were killed (the lock is held: no run is writing one now)."""
    pattern = re.compile(rf"\.{re.escape(out.name)}\.(training|replaced)-[a-z0-9_]{{8}}\.tmp")
    for path in out.parent.iterdir():
        if pattern.fullmatch(path.name) and path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)


def _sync_tree(folder: Path) -> None:
    """Every file and folder of `folder` on disk before it is renamed into place."""
    for path in [*folder.rglob("*"), folder]:
        fsync_dir(path)  # an fsync of whatever `path` is: it opens read-only


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish(tmp: Path, out: Path) -> None:
    """Move the finished folder into place (the earlier model, if any, is set aside, then removed).
    Its files get the permissions of any the user creates (mkdtemp and some writers use 0600)."""
    mask = _umask()
    for path in tmp.rglob("*"):
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)
    os.chmod(tmp, 0o777 & ~mask)
    _sync_tree(tmp)
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.replaced-", suffix=".tmp", dir=out.parent))
        os.replace(out, old)
    os.replace(tmp, out)
    fsync_dir(out.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def split(items: list[Example], share: float, seed: int) -> tuple[list[Example], list[Example]]:
    """(train, held out): `share` of the examples, drawn with `seed`, at least one when the share is
    above 0 and at least one left to train on."""
    if share <= 0 or len(items) < 2:
        return items, []
    count = min(len(items) - 1, max(1, round(len(items) * share)))
    held = set(random.Random(seed).sample(range(len(items)), count))
    return [e for i, e in enumerate(items) if i not in held], [e for i, e in enumerate(items) if i in held]


def _versions() -> dict[str, str]:
    import peft
    import torch
    import transformers
    import trl

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "peft": peft.__version__,
    }


def _trainer(
    config: TrainingConfig,
    model: Any,
    tokenizer: Any,
    train_set: EncodedSet,
    scratch: Path,
    device: str,
    bf16: bool,
    callback: Any,
) -> Any:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    rows = [{"input_ids": e.input_ids, "labels": e.labels} for e in train_set.items]
    args = SFTConfig(
        output_dir=str(scratch),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.learning_rate,
        warmup_steps=config.warmup_ratio,
        max_length=config.max_length,
        gradient_checkpointing=config.gradient_checkpointing,
        bf16=bf16,
        fp16=False,
        use_cpu=device == "cpu",
        seed=config.seed,
        data_seed=config.seed,
        logging_steps=1,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    peft_config = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.lora_targets,
        bias="none",
        task_type="CAUSAL_LM",
    )
    try:
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=[callback],
        )
    except ValueError as e:
        if "Target module" in str(e) or "target_modules" in str(e):
            raise TrainingSetupError(f"lora_targets {config.lora_targets}: {e}") from None
        raise
    trainer.remove_callback(PrinterCallback)  # it prints every log line as a dict; ours says it better
    return trainer


def _train_into(
    tmp: Path,
    config: TrainingConfig,
    examples: Examples,
    base: Base,
    key: str,
    device: str,
    dtype: Any,
    say: Say,
    started: float,
) -> TrainingReport:
    import torch
    from transformers import set_seed

    train_items, eval_items = split(examples.items, config.eval_share, config.seed)
    say(
        f"training {base.name} ({config.direction}) on {len(train_items)} examples from {examples.source}"
        f"{f', {len(eval_items)} held out' if eval_items else ''}; {device}, {str(dtype).removeprefix('torch.')}"
    )
    tokenizer, train_set = encode_for(
        base.path, train_items, examples.source, config.direction, config.max_length, "example"
    )
    eval_set = encode_examples(tokenizer, eval_items, config.direction, config.max_length)
    if train_set.truncated or train_set.dropped:
        say(
            f"{train_set.truncated} examples cut at {config.max_length} tokens, {train_set.dropped} left out (no "
            "completion within it)"
        )
    set_seed(config.seed)
    model = load_model(base.path, device, dtype)
    progress = ProgressLog(say, config.log_every)
    trainer = _trainer(config, model, tokenizer, train_set, tmp / "trainer", device, dtype == torch.bfloat16, progress)
    result = trainer.train()
    eval_loss, eval_tokens = None, 0
    if eval_set.items:
        eval_loss, eval_tokens = completion_loss(trainer.model, eval_set.items, tokenizer.pad_token_id)
    save_dtype = {"auto": dtype, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[
        config.save_dtype
    ]
    tuned = trainer.model
    if save_dtype == torch.float32:
        tuned = tuned.float()  # merge in float32: a short run's updates vanish in bfloat16's rounding
    merged = tuned.merge_and_unload().to(dtype=save_dtype)
    shutil.rmtree(tmp / "trainer", ignore_errors=True)
    merged.config.use_cache = True
    merged.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    seconds = float(result.metrics.get("train_runtime", progress.seconds()))
    report = TrainingReport(
        key=key,
        base=base.name,
        base_path=base.path,
        direction=config.direction,
        data=DataSummary(
            source=examples.source,
            hash=examples.hash(),
            examples=len(examples.items),
            skipped=examples.skipped,
            train_examples=len(train_set.items),
            eval_examples=len(eval_set.items),
            truncated=train_set.truncated + eval_set.truncated,
            dropped=train_set.dropped + eval_set.dropped,
        ),
        hyperparameters=config.hyperparameters(),
        steps=int(trainer.state.global_step),
        epochs=float(trainer.state.epoch or 0.0),
        train_loss=float(result.training_loss),
        final_train_loss=progress.final_loss(),
        eval_loss=eval_loss,
        eval_tokens=eval_tokens,
        tokens=progress.tokens,
        seconds=round(seconds, 3),
        tokens_per_second=round(progress.tokens / seconds, 1) if seconds > 0 else 0.0,
        total_seconds=round(time.monotonic() - started, 3),
        device=device,
        dtype=str(dtype).removeprefix("torch."),
        save_dtype=str(save_dtype).removeprefix("torch."),
        versions=_versions(),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    (tmp / REPORT).write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return report
