"""A benchmark's answers kept as they are made, so that an evaluation killed halfway does not make
them again: one JSONL file per model and benchmark, a line per answer (its prompt's key and the
answer), appended and synced after each batch. A line torn by a kill is ignored when read back."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

# Beside the manifest while an evaluation runs; removed once `evaluation.json` is written.
FOLDER = "evaluation-answers"


class AnswerLog:
    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> dict[str, str]:
        known: dict[str, str] = {}
        if not self.path.is_file():
            return known
        for line in self.path.read_text("utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
                known[str(row["key"])] = str(row["answer"])
            except (ValueError, KeyError, TypeError):
                continue  # a line torn by a kill: that answer is made again
        return known

    def append(self, pairs: Sequence[tuple[str, str]]) -> None:
        if not pairs:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = "".join(json.dumps({"key": k, "answer": a}, ensure_ascii=False) + "\n" for k, a in pairs)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def answered(
    keys: Sequence[str],
    prompts: Sequence[str],
    log: AnswerLog | None,
    make: Callable[[Sequence[str], Callable[[int, int, list[str]], None]], list[str]],
) -> tuple[list[str], int]:
    """The answer to each prompt (in order) and how many were read back from `log`: those the log
    holds are not made again; `make(prompts, on_batch)` makes the others, and each batch it
    finishes is appended to the log at once."""
    known = log.read() if log is not None else {}
    todo = [i for i, k in enumerate(keys) if k not in known]

    def keep(done: int, total: int, new: list[str]) -> None:
        if log is not None:
            log.append([(keys[todo[i]], a) for i, a in zip(range(done - len(new), done), new, strict=True)])

    made = make([prompts[i] for i in todo], keep) if todo else []
    answers = dict(zip((keys[i] for i in todo), made, strict=True))
    return [known[k] if k in known else answers[k] for k in keys], len(keys) - len(todo)
