"""How fast generated code runs in the sandbox, and how much of a code run waits on it.

1. Executions per second: `--programs` answers of the usual shape (a function and a few asserts,
   one in three failing) through `Sandbox.run_many` on every core, isolated with bubblewrap, and the
   same programs through the same launcher without isolation (the baseline, same process). The
   ratio is the isolation's cost.
2. A SelfCodeAlign run on a scripted engine that takes a GPU-like time per call (`--call-s`):
   the share of the run's wall time spent running programs (the summary's `execution_seconds`),
   and the engine's busy share.

Nothing here asserts on timings. Run: `.venv/bin/python bench/code_execution_bench.py`.
"""

from __future__ import annotations

import os

os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")

import argparse
import sys
import tempfile
import time
from pathlib import Path

from synth.sandbox import Sandbox
from synth.schemas.code import SandboxConfig

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT))


def program(n: int) -> str:
    wrong = " + 1" if n % 3 == 2 else ""
    return (
        f"def total_{n}(values):\n    return sum(v * v for v in values){wrong}\n\n\n"
        f"assert total_{n}([1, 2, 3]) == 14\nassert total_{n}([]) == 0\n"
    )


def throughput(programs: int) -> None:
    config = SandboxConfig()
    print(f"{programs} programs on {config.slots()} slots")
    rates = {}
    for isolation in ("none-unsafe", "bubblewrap"):
        box = Sandbox(config, isolation)  # type: ignore[arg-type]
        box.check()
        texts = [program(n) for n in range(programs)]
        started = time.perf_counter()
        runs = list(box.run_many(texts))
        wall = time.perf_counter() - started
        passed = sum(r.passed for r in runs)
        rates[isolation] = programs / wall
        print(f"  {isolation:<12} {rates[isolation]:7.1f} executions/s  ({passed} passed, {wall:.2f} s)")
    print(f"  isolation costs {rates['none-unsafe'] / rates['bubblewrap']:.2f}x the unisolated launch")


def share(seeds: int, call_s: float, quiet: bool = False, label: str = "") -> float:
    from bench.engine_busy_bench import Delayed
    from synth.flows.code import run_self_code_align
    from synth.schemas import DatasetConfig, ScriptedEngineConfig
    from synth.schemas.code import SelfCodeAlignConfig
    from tests.flows.code_script import reply, seed_folder

    with tempfile.TemporaryDirectory() as folder:
        code = Path(folder, "code")
        seed_folder(code, modules=-(-seeds // 4))
        config = SelfCodeAlignConfig(
            code=str(code), num_records=10_000, batch_size=4, samples=10, humaneval=False, max_batches=-(-seeds // 4)
        )
        engine = Delayed(reply, call_s, 0.0)
        started = time.perf_counter()
        summary = run_self_code_align(
            config,
            ScriptedEngineConfig(),
            DatasetConfig(path=str(Path(folder, "ds"))),
            model=engine,  # type: ignore[arg-type]
        )
        wall = time.perf_counter() - started
    if quiet:
        return 0.0
    executed, use = summary["execution_seconds"], summary["engine"]
    loop = use["wall_seconds"]
    print(f"SelfCodeAlign, {summary['seeds']} seeds x 10 answers, engine calls of {call_s:.2f} s: {label}")
    print(
        f"  batch loop {loop:.2f} s (command {wall:.2f} s); programs ran {executed:.2f} s: {executed / loop:.1%} of the loop"
    )
    print(f"  engine busy share {use['busy_share']:.3f}")
    return float(loop)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--programs", type=int, default=64)
    parser.add_argument("--seeds", type=int, default=40, help="seed functions in the run")
    parser.add_argument("--call-s", type=float, default=0.5, help="seconds per engine call in the run")
    args = parser.parse_args()
    throughput(args.programs)
    share(4, 0.0, quiet=True)  # starts Prefect's temporary server, which the measured run then finds up
    from synth.flows.code import CodeJob

    beside = CodeJob.next_after_generation
    del CodeJob.next_after_generation  # the baseline: the next batch starts once this one is made
    try:
        before = share(args.seeds, args.call_s, label="next batch after this one's programs (baseline)")
    finally:
        CodeJob.next_after_generation = beside  # type: ignore[method-assign]
    after = share(args.seeds, args.call_s, label="next batch beside this one's programs")
    print(f"batch loop wall, baseline over beside: {before / after:.2f}x")


if __name__ == "__main__":
    main()
