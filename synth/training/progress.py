"""Progress of a training run, one line every N steps: loss over the window, speed and time left."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from transformers import TrainerCallback


class ProgressLog(TrainerCallback):
    """Collects the loss the trainer logs at every step and says, every `every` steps and at the
    last one, the mean loss since the previous line, tokens per second and the time left."""

    def __init__(self, say: Callable[[str], None], every: int) -> None:
        self.say = say
        self.every = every
        self.window: list[float] = []
        self.last_window: list[float] = []
        self.tokens = 0
        self.started: float | None = None

    def seconds(self) -> float:
        return 0.0 if self.started is None else time.monotonic() - self.started

    def final_loss(self) -> float:
        """Mean loss of the last window (the last `every` steps, or fewer at the end)."""
        losses = self.window or self.last_window
        return sum(losses) / len(losses) if losses else float("nan")

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.started = time.monotonic()
        self.say(
            f"training: {state.max_steps} steps of {args.per_device_train_batch_size * args.gradient_accumulation_steps} examples"
        )

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not logs or "loss" not in logs:
            return
        self.window.append(float(logs["loss"]))
        self.tokens = int(logs.get("num_tokens", self.tokens))
        step, total = state.global_step, state.max_steps
        if step % self.every and step < total:
            return
        elapsed = self.seconds()
        speed = self.tokens / elapsed if elapsed > 0 else 0.0
        left = elapsed / step * (total - step) if step else 0.0
        loss = sum(self.window) / len(self.window)
        self.say(
            f"step {step}/{total}: loss {loss:.4f}, {speed:.0f} tokens/s, {elapsed:.0f} s, about {left:.0f} s left"
        )
        self.last_window, self.window = self.window, []
