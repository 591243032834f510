"""How much of a run the engine is busy: each generator through the local runner on a scripted
engine that takes a GPU-like time per call, made ahead (pipelined) and one batch at a time.

The engine's busy share is the run summary's `engine.busy_share` (time inside engine calls over the
batch loop's wall time). What is not busy is the runner's own work between calls: curation, the
commit, planning. The ratio printed is the one-at-a-time wall time over the pipelined one, from the
same process; the goal for the busy share is 0.9. Nothing here asserts on timings.

Run: `.venv/bin/python bench/engine_busy_bench.py` (`--help` for sizes).
"""

from __future__ import annotations

import os

os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")

import argparse
import json
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from synth.engines import ChatRequest, Completion, ScriptedEngine
from synth.schemas import DatasetConfig, EvolInstructConfig, ScriptedEngineConfig, SelfInstructConfig

BUSY_GOAL = 0.9
_NEXT_TASK = re.compile(r"Task (\d+):$")


class Delayed:
    """A scripted engine whose call takes `fixed` seconds plus `per_request` per request, as a
    batched GPU call would (the time is spent sleeping, so the runner's own work runs meanwhile)."""

    def __init__(self, reply: Callable[[ChatRequest], str], fixed: float, per_request: float) -> None:
        self.engine = ScriptedEngine(reply)
        self.model_name = "delayed"
        self.fixed, self.per_request = fixed, per_request

    def chat(self, requests: Sequence[ChatRequest]) -> list[Completion]:
        time.sleep(self.fixed + self.per_request * len(requests))
        return self.engine.chat(requests)

    def close(self) -> None:
        pass


def self_instruct_replies() -> Callable[[ChatRequest], str]:
    """Novel tasks per prompt (distinct words), labels for every third, an instance per task."""
    counter = [0]

    def task() -> str:
        counter[0] += 1
        kind = "label" if counter[0] % 3 == 0 else "explain"
        return f"Please {kind} " + " ".join(f"w{counter[0]}x{k}" for k in range(6))

    def reply(request: ChatRequest) -> str:
        if request.tag == "self_instruct_tasks":
            found = _NEXT_TASK.search(request.prefill or "")
            first = int(found.group(1)) if found else 1
            return "\n".join([" " + task(), *(f"Task {first + i}: {task()}" for i in range(1, 8))])
        text = request.messages[-1].content.rsplit("Task: ", 1)[-1].strip()
        if request.tag in ("self_instruct_classify", "self_instruct_open_ended"):
            return " Yes" if text.startswith("Please label") else " No"
        if request.tag == "self_instruct_instances_output_first":
            return f" positive\nInput: text for {text}"
        return f" input for {text}\nOutput: answer to {text}"

    return reply


def evol_replies(request: ChatRequest) -> str:
    if request.tag == "evol_equality":
        return '{"verdict": "not equal"}'
    if request.tag == "evol_response":
        return "A full answer with real content, " + request.messages[-1].content[:40]
    return f" {request.messages[-1].content[-60:]} With one more constraint ({request.tag})."


def run(name: str, folder: Path, engine: Delayed, pipeline: bool, size: int) -> dict[str, Any]:
    folder.mkdir(parents=True, exist_ok=True)
    dataset = DatasetConfig(path=str(folder / f"{name}-{pipeline}"))
    options: dict[str, Any] = {"model": engine, "pipeline": pipeline, "batch_retries": 0}
    if name == "self_instruct":
        from synth.flows.self_instruct import run_self_instruct

        config = SelfInstructConfig(num_records=size, prompts_per_batch=8, include_seed_tasks=False)
        return run_self_instruct(config, ScriptedEngineConfig(), dataset, **options)
    from synth.flows.evol_instruct import run_evol_instruct

    source = folder / "source.jsonl"
    source.write_text(
        "".join(
            json.dumps({"id": f"s{i}", "instruction": f"Explain topic number {i} to a child."}) + "\n"
            for i in range(size)
        )
    )
    config = EvolInstructConfig(source=str(source), rounds=2, chunk_size=max(1, size // 8))
    return run_evol_instruct(config, ScriptedEngineConfig(), dataset, **options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=160, help="Self-Instruct's target; Evol's source size")
    parser.add_argument("--fixed", type=float, default=0.05, help="seconds per engine call")
    parser.add_argument("--per-request", type=float, default=0.002, help="seconds per request in a call")
    args = parser.parse_args()
    print(f"engine: {args.fixed}s per call + {args.per_request}s per request; goal busy share >= {BUSY_GOAL}")
    print(f"{'generator':<14} {'mode':<14} {'batches':>7} {'wall s':>8} {'busy share':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        # Untimed: the first flow run starts Prefect's local server.
        run("self_instruct", Path(tmp) / "warm-up", Delayed(self_instruct_replies(), 0, 0), False, 1)
        for name in ("self_instruct", "evol_instruct"):
            walls = {}
            for pipeline in (False, True):
                replies = self_instruct_replies() if name == "self_instruct" else evol_replies
                summary = run(name, Path(tmp), Delayed(replies, args.fixed, args.per_request), pipeline, args.records)
                use = summary["engine"]
                mode = "pipelined" if use["pipelined"] else "one at a time"
                walls[pipeline] = use["wall_seconds"]
                print(
                    f"{name:<14} {mode:<14} {summary['batches']:>7} {use['wall_seconds']:>8.2f} {use['busy_share']:>10.3f}"
                )
            print(f"{name:<14} one-at-a-time wall / this wall: {walls[False] / walls[True]:.2f}")


if __name__ == "__main__":
    main()
