"""The base model, the device it runs on, and the one tokenization training and scoring share.

`encode` renders a (prompt, completion) chat with the model's own chat template and masks every
token but the completion's, as TRL's SFT trainer does for prompt-completion data; training feeds
these tokens to the trainer and `completion_loss` scores the same tokens, so the proxy loss is
measured on exactly what training optimizes. Nothing here reaches a model hub.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synth.training.config import Device
from synth.training.data import Chat, Example, TrainingDataError, to_chat

if TYPE_CHECKING:
    import torch

IGNORE = -100  # label of a token that does not count in the loss
REPORT = "training.json"  # beside the weights of a model folder this code wrote
_EVAL_TOKENS = 2048  # padded tokens per forward pass when scoring (the logits dominate memory)


class TrainingSetupError(ValueError):
    """A base model, device or output folder that cannot be used; the message names it."""


@dataclass(frozen=True)
class Base:
    """A base model: what reports call it, what is loaded, and a fingerprint of its files."""

    name: str
    path: str
    fingerprint: str


def offline() -> None:
    """Keep the hub libraries from reaching the network (nothing is downloaded at run time)."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ[var] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def folder_fingerprint(folder: Path) -> str:
    """A cheap fingerprint of a model folder: each file's name, size and modification time (a
    retrained folder gets new files; reading every weight of a large model would take minutes)."""
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        stat = file.stat()
        digest.update(f"{file.relative_to(folder)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def check_out(out: Path) -> None:
    """`out` may be created, or replaced: an empty folder, or a model folder this code wrote."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise TrainingSetupError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / REPORT).is_file():
        raise TrainingSetupError(
            f"--out {out}: the folder holds files and no {REPORT}, so it is not a model this command "
            "wrote; choose another folder"
        )


def resolve_base(base: str | None) -> Base:
    """The base model a config names: None is the embedded model (converted once into the local
    cache); a folder must hold a `config.json`; any other string must be a model already in the
    local Hugging Face cache."""
    offline()
    if base is None:
        from synth.engines.embedded import EMBEDDED_MODEL_NAME, ensure_embedded_model

        path = ensure_embedded_model()
        return Base(EMBEDDED_MODEL_NAME, str(path), folder_fingerprint(path))
    folder = Path(base).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise TrainingSetupError(f"base model {base}: the folder has no config.json; not a model folder")
        return Base(base, str(folder.resolve()), folder_fingerprint(folder))
    if base.startswith(("/", ".", "~")) or folder.exists():
        raise TrainingSetupError(f"base model {base}: no such folder")
    from huggingface_hub import try_to_load_from_cache

    if not isinstance(try_to_load_from_cache(base, "config.json"), str):
        raise TrainingSetupError(
            f"base model {base}: not a local folder and not in the local Hugging Face cache (nothing is "
            "downloaded); give the path of a model folder"
        )
    return Base(base, base, f"hub-cache:{base}")


def pick_device(want: Device) -> tuple[str, torch.dtype]:
    """(device, dtype): CUDA in bfloat16 when it is there (float32 on a GPU without bfloat16),
    else the CPU in float32."""
    import torch

    if want == "cuda" and not torch.cuda.is_available():
        raise TrainingSetupError("device cuda: no CUDA device is visible")
    if want != "cpu" and torch.cuda.is_available():
        return "cuda", torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return "cpu", torch.float32


@contextmanager
def cpu_threads(threads: int | None) -> Iterator[None]:
    """torch's CPU threads set to `threads` for a while (None: left as they are). On a CPU shared with
    other busy processes, one thread can be many times faster than several: threads that wait for
    each other at every operation lose their core to the other processes."""
    import torch

    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def quiet_libraries() -> None:
    """Progress bars and info chatter of the libraries off: training reports its own progress."""
    import datasets
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    for name in ("peft", "trl", "accelerate"):
        logging.getLogger(name).setLevel(logging.ERROR)


@contextmanager
def working_on(want: Device, threads: int | None) -> Iterator[tuple[str, torch.dtype]]:
    """(device, dtype) for a piece of work with models (`pick_device`); meanwhile torch's CPU threads
    are `threads` (`cpu_threads`), and the libraries' chatter is turned off (`quiet_libraries`)."""
    with cpu_threads(threads):
        quiet_libraries()
        yield pick_device(want)


def load_tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if not getattr(tokenizer, "chat_template", None):
        raise TrainingSetupError(
            f"base model {path}: its tokenizer has no chat template; use an instruction-tuned (chat) model"
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(path: str, device: str, dtype: torch.dtype) -> Any:
    from transformers import AutoModelForCausalLM

    model: Any = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    return model.to(device)


@dataclass(frozen=True)
class Encoded:
    """One example's tokens, and its labels: the token where it counts in the loss, else IGNORE."""

    input_ids: list[int]
    labels: list[int]
    truncated: bool = False


def _ids(tokenizer: Any, chat: Chat, generation_prompt: bool) -> list[int]:
    out = tokenizer.apply_chat_template(chat, tokenize=True, return_dict=True, add_generation_prompt=generation_prompt)
    return list(out["input_ids"])


def encode(tokenizer: Any, prompt: Chat, completion: Chat, max_length: int) -> Encoded | None:
    """The chat's tokens with only the completion's counting in the loss, cut at `max_length`
    (keeping the start); None when no completion token is left within it. The completion starts
    where the rendered prompt (with the generation prompt) and the whole chat diverge."""
    prompt_ids = _ids(tokenizer, prompt, generation_prompt=True)
    full = _ids(tokenizer, prompt + completion, generation_prompt=False)
    start = 0
    while start < min(len(prompt_ids), len(full)) and prompt_ids[start] == full[start]:
        start += 1
    labels = [IGNORE] * start + full[start:]
    truncated = len(full) > max_length
    full, labels = full[:max_length], labels[:max_length]
    if all(label == IGNORE for label in labels):
        return None
    return Encoded(full, labels, truncated)


@dataclass
class EncodedSet:
    items: list[Encoded]
    truncated: int = 0
    dropped: int = 0


def encode_for(
    base_path: str, items: Sequence[Example], source: str, direction: str, max_length: int, what: str
) -> tuple[Any, EncodedSet]:
    """The base's tokenizer and `items` encoded with it; an error naming `source` when none of
    them (`what`: "example", "reference pair") has a completion within `max_length` tokens."""
    tokenizer = load_tokenizer(base_path)
    encoded = encode_examples(tokenizer, items, direction, max_length)
    if not encoded.items:
        raise TrainingDataError(f"{source}: no {what} has a completion within max_length {max_length} tokens")
    return tokenizer, encoded


def encode_examples(tokenizer: Any, examples: Sequence[Example], direction: str, max_length: int) -> EncodedSet:
    out = EncodedSet([])
    for example in examples:
        prompt, completion = to_chat(example, direction)  # type: ignore[arg-type]
        encoded = encode(tokenizer, prompt, completion, max_length)
        if encoded is None:
            out.dropped += 1
            continue
        out.truncated += encoded.truncated
        out.items.append(encoded)
    return out


def _batches(items: Sequence[Encoded]) -> Iterator[list[Encoded]]:
    batch: list[Encoded] = []
    for item in items:
        longest = max([len(item.input_ids)] + [len(b.input_ids) for b in batch])
        if batch and longest * (len(batch) + 1) > _EVAL_TOKENS:
            yield batch
            batch = []
        batch.append(item)
    if batch:
        yield batch


def completion_loss(model: Any, items: Sequence[Encoded], pad_id: int) -> tuple[float, int]:
    """(mean loss per completion token, completion tokens) of `model` on `items`: the sum of each
    completion token's negative log-likelihood over the whole set, divided by their number."""
    sums, counts = completion_losses(model, items, pad_id)
    return sum(sums) / sum(counts), sum(counts)


def completion_losses(model: Any, items: Sequence[Encoded], pad_id: int) -> tuple[list[float], list[int]]:
    """Per item of `items`: the summed negative log-likelihood of its completion tokens under
    `model`, and how many completion tokens it has (for paired comparisons item by item)."""
    import torch
    import torch.nn.functional as F

    if not items:
        raise ValueError("nothing to score")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    sums: list[float] = []
    counts: list[int] = []
    try:
        with torch.no_grad():
            for batch in _batches(items):
                width = max(len(b.input_ids) for b in batch)
                ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
                labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, b in enumerate(batch):
                    ids[row, : len(b.input_ids)] = torch.tensor(b.input_ids)
                    labels[row, : len(b.labels)] = torch.tensor(b.labels)
                    mask[row, : len(b.input_ids)] = 1
                logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
                targets = labels[:, 1:].to(device)
                nll = F.cross_entropy(
                    logits[:, :-1].float().reshape(-1, logits.size(-1)),
                    targets.reshape(-1),
                    ignore_index=IGNORE,
                    reduction="none",
                ).reshape(targets.shape)
                sums += nll.sum(dim=1).tolist()
                counts += (targets != IGNORE).sum(dim=1).tolist()
    finally:
        model.train(was_training)
    return sums, counts
