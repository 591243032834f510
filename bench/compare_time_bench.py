"""How long `synth compare` takes for two datasets, as a ratio of evaluating each of them alone.

- **Datasets:** two of `--records` pairs each, written as datasets: the shipped English seed tasks'
  first instances (A), and the next ones with their outputs rotated one place against their
  instructions (B). The reference is `--reference-pairs` further seed tasks.
- **Compare:** `synth compare A B --reference R` fine-tunes the base once on each and scores the
  base and both tuned models: loss on the reference and IFBench's first `--benchmark-limit`
  prompts, answered by vLLM (the command's defaults apart from the sizes below).
- **Baseline:** `synth evaluate A` then `synth evaluate B` with the same settings (`--force`): the
  same two fine-tunes and the same tuned models' scores, but the base is scored twice.
- **Order:** `--rounds` rounds, each timing both, the order alternating from round to round; every
  command is a process of its own, so each pays its imports and model loads as a user's would.
- **Result:** the median seconds of each, the ratio compare / (evaluate A + evaluate B) (below 1.0
  is the base scored once instead of twice), and where compare's time went, from the moment each
  of its progress lines was printed.

Nothing is asserted. Run: `.venv/bin/python bench/compare_time_bench.py` (about 12 minutes on 2
CPU cores with the embedded model; `--help` for the sizes).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SYNTH = str(Path(sys.executable).with_name("synth"))


def timed(args: list[str]) -> tuple[float, list[tuple[float, str]]]:
    """The command's wall time and each output line with the second it was printed at."""
    started = time.monotonic()
    process = subprocess.Popen([SYNTH, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=None)
    lines = [(time.monotonic() - started, line.rstrip("\n")) for line in process.stdout or []]
    if process.wait() != 0:
        raise SystemExit(f"failed: synth {' '.join(args)}\n" + "\n".join(line for _, line in lines[-30:]))
    return time.monotonic() - started, lines


# Compare's progress lines that start each stage (the first match after the previous one).
STAGES = [
    ("start, the base's loss and IFBench answers", re.compile(r"fine-tuning on")),
    ("fine-tune A, its loss, load it in vLLM", re.compile(r"ifbench: .* answers \d+ prompts")),
    ("A answers IFBench", re.compile(r"fine-tuning on")),
    ("fine-tune B, its loss, load it in vLLM", re.compile(r"ifbench: .* answers \d+ prompts")),
]


def stages(lines: list[tuple[float, str]], total: float) -> list[tuple[str, float]]:
    """Compare's wall time split at its progress lines (see `STAGES`); the last stage is B's
    answers and the table."""
    marks = [0.0]
    position = 0
    for _, pattern in STAGES:
        for i in range(position, len(lines)):
            if pattern.search(lines[i][1]):
                marks.append(lines[i][0])
                position = i + 1
                break
        else:
            return []
    marks.append(total)
    names = [name for name, _ in STAGES] + ["B answers IFBench, the table"]
    return [(names[i], marks[i + 1] - marks[i]) for i in range(len(names))]


def datasets(folder: Path, records: int, reference_pairs: int) -> tuple[Path, Path, Path]:
    from synth.generators.seeds import load_seed_tasks
    from synth.schemas import Record, RunInfo
    from synth.shards import DatasetWriter

    tasks = [t for t in load_seed_tasks(None, "en") if t.instances]
    if len(tasks) < 2 * records + reference_pairs:
        raise SystemExit(f"only {len(tasks)} seed tasks: lower --records or --reference-pairs")
    pairs = [(t.instruction, t.instances[0].input, t.instances[0].output) for t in tasks]
    a, b = pairs[:records], pairs[records : 2 * records]
    b = [(q, i, b[(k + 1) % len(b)][2]) for k, (q, i, _) in enumerate(b)]  # outputs one place off
    out = []
    for name, rows in (("A", a), ("B", b)):
        path = folder / name
        with DatasetWriter(path) as writer:
            writer.start_run(RunInfo(run_id=name, generator="seed", config={}, engine={}, model="seed tasks"))
            made = [Record(generator="seed", instruction=q, input=i, output=o) for q, i, o in rows]
            writer.commit_batch(name, 0, made, [])
            writer.finish_run(name)
        out.append(path)
    reference = folder / "reference.jsonl"
    held = pairs[2 * records : 2 * records + reference_pairs]
    reference.write_text("".join(json.dumps({"instruction": q, "input": i, "output": o}) + "\n" for q, i, o in held))
    return out[0], out[1], reference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=20, help="pairs in each dataset")
    parser.add_argument("--reference-pairs", type=int, default=8)
    parser.add_argument("--max-steps", type=int, default=10, help="fine-tuning steps per model")
    parser.add_argument("--benchmark-limit", type=int, default=16, help="IFBench prompts each model answers")
    parser.add_argument("--benchmark-max-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="compare-bench-") as scratch:
        folder = Path(scratch)
        a, b, reference = datasets(folder, args.records, args.reference_pairs)
        sizes = ["--reference", str(reference), "--max-steps", str(args.max_steps), "--benchmark", "ifbench"]
        sizes += [
            "--benchmark-limit",
            str(args.benchmark_limit),
            "--benchmark-max-tokens",
            str(args.benchmark_max_tokens),
        ]
        compare_cmd = ["compare", str(a), str(b), *sizes, "--out", str(folder / "table")]
        compared: list[float] = []
        evaluated: list[float] = []
        split: list[tuple[str, float]] = []
        for round_ in range(args.rounds):
            order = ["compare", "evaluate"] if round_ % 2 == 0 else ["evaluate", "compare"]
            for which in order:
                if which == "compare":
                    seconds, lines = timed(compare_cmd)
                    compared.append(seconds)
                    split = stages(lines, seconds) or split
                else:
                    evaluated.append(sum(timed(["evaluate", str(d), *sizes, "--force"])[0] for d in (a, b)))
            print(f"round {round_ + 1}: compare {compared[-1]:.0f} s, evaluate A + B {evaluated[-1]:.0f} s", flush=True)
        table = json.loads((folder / "table" / "compare.json").read_text())
    ours, baseline = statistics.median(compared), statistics.median(evaluated)
    print(
        f"\ncompare of two datasets ({args.records} records each, {args.max_steps} steps, "
        f"IFBench x{args.benchmark_limit}): {ours:.0f} s (median of {len(compared)})"
    )
    print(f"evaluate A + evaluate B, same settings: {baseline:.0f} s")
    print(f"ratio compare / (evaluate A + B): {ours / baseline:.2f}")
    for name, seconds in split:
        print(f"  {name:42s} {seconds:6.0f} s  {seconds / ours:5.0%}")
    ranked = [row["dataset"] for row in sorted(table.get("rows", []), key=lambda r: r.get("loss", 0.0))]
    if ranked:
        print("loss ranks (best first): " + ", ".join(Path(d).name for d in ranked))


if __name__ == "__main__":
    main()
