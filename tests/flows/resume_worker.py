"""A Self-Instruct run (or, given a source of pairs, a recycling run; given `unnatural` or
`codeclm`, a run of that generator) in its own process, for the kill-and-resume test.

Replies depend only on each request (its seed), so a resumed run sees exactly the replies an
uninterrupted one would. Each engine call sleeps a little so the test can kill the process mid-run.
"""

from __future__ import annotations

import sys
import time

from synth.engines import ChatRequest, ScriptedEngine
from synth.flows.self_instruct import run_self_instruct
from synth.schemas import DatasetConfig, ScriptedEngineConfig, SelfInstructConfig


def reply(request: ChatRequest) -> str:
    seed = request.sampling.seed if request.sampling else 0
    if request.tag == "self_instruct_tasks":
        words = [" ".join(f"t{seed}k{i}w{j}" for j in range(5)) for i in range(3)]
        first = int(request.prefill.rsplit("Task ", 1)[1].rstrip(":"))
        return f" Describe {words[0]}\nTask {first + 1}: Summarize {words[1]}\nTask {first + 2}: Compare {words[2]}"
    if request.tag == "self_instruct_classify":
        return " No"
    field = "" if (request.prefill or "").endswith("Input:") else "Input:"
    return f"{field} data {seed}\nOutput: result {seed}"


class SlowEngine(ScriptedEngine):
    def chat(self, requests):
        time.sleep(0.3)
        return super().chat(requests)


def recycle(out: str, source: str) -> None:
    """Recycling by reflection, a chunk of two source pairs per batch: a teacher whose better answers
    the default scripted student keeps."""
    from synth.flows.reflection import run_reflection
    from synth.schemas.reflection import ReflectionConfig
    from tests.flows.test_reflection_flow import wordy_teacher

    run_reflection(
        ReflectionConfig(source=source, chunk_size=2),
        ScriptedEngineConfig(),
        DatasetConfig(path=out, shard_rows=4),
        model=SlowEngine(wordy_teacher()),
        student=ScriptedEngine(),
        batch_retries=0,
    )


def unnatural(out: str, batches: int) -> None:
    """Unnatural Instructions, four prompts a batch, with its scripted model."""
    from synth.flows.unnatural import run_unnatural
    from synth.schemas.unnatural import UnnaturalConfig
    from tests.generators.test_unnatural import reply as unnatural_reply

    run_unnatural(
        UnnaturalConfig(num_records=4 * batches, batch_size=4, paraphrases=1, seed=5),
        ScriptedEngineConfig(),
        DatasetConfig(path=out, shard_rows=4),
        model=SlowEngine(unnatural_reply),
        batch_retries=0,
    )


def codeclm(out: str, batches: int) -> None:
    """CodecLM, one seed instruction a batch, with its scripted strong and target models."""
    from pathlib import Path

    from synth.flows.codeclm import run_codeclm
    from synth.schemas.codeclm import CodeclmConfig
    from tests.generators.test_codeclm import reply as codeclm_reply
    from tests.generators.test_codeclm import write_seeds

    firsts = ("Plan", "Write", "Describe", "Explain", "List", "Compare", "Design", "Review")
    seeds = write_seeds(Path(out).parent, [f"{word} something for a weekend at the coast." for word in firsts])
    run_codeclm(
        CodeclmConfig(seeds=str(seeds), limit=batches, chunk_size=1, instructions_per_metadata=3, seed=5),
        ScriptedEngineConfig(),
        DatasetConfig(path=out, shard_rows=4),
        model=SlowEngine(codeclm_reply),
        target=ScriptedEngine(codeclm_reply, model_name="target-model"),
        batch_retries=0,
    )


if __name__ == "__main__":
    out, batches = sys.argv[1], int(sys.argv[2])
    if len(sys.argv) > 3 and sys.argv[3] in ("unnatural", "codeclm"):
        (unnatural if sys.argv[3] == "unnatural" else codeclm)(out, batches)
        sys.exit(0)
    if len(sys.argv) > 3:  # a source of pairs: recycle it
        recycle(out, sys.argv[3])
        sys.exit(0)
    run_self_instruct(
        SelfInstructConfig(num_records=10_000, max_batches=batches, prompts_per_batch=3, include_seed_tasks=False),
        ScriptedEngineConfig(),
        DatasetConfig(path=out, shard_rows=4),
        model=SlowEngine(reply),
        batch_retries=0,
    )
