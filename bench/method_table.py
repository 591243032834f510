"""The method table: which generator's data, and which selection of one pool, makes the better
fine-tune, on equal budgets, through the real command line.

Steps (each a `synth` command, timed):
1. Self-Instruct, Magpie, Evol-Instruct (from the seed tasks), Unnatural Instructions and CodecLM
   (from the first `--codeclm-seeds` seed tasks, the engine's model as both strong and target) each
   generate into a dataset of their own on the configured engine (`--engine-config`, default the
   embedded model), in the `small-model` profile by default (`--profile paper` for a capable
   model); `synth recycle` rewrites the Self-Instruct pool by Selective Reflection-tuning. A dataset
   that keeps fewer records than the budget is named and left out of the comparison.
2. `synth compare` fine-tunes the same base on `--budget` records of each dataset and scores every
   model on the reference pairs (default: the shipped English seed tasks' human-written answers;
   records asking one of those prompts are left out of training) and on the benchmarks
   (`--benchmark`, default IFBench's first `--benchmark-limit` 40 scorable prompts, answered by vLLM).
3. The Self-Instruct pool is selected down to the same budget by random, longest, IFD and Deita, and
   `synth compare` ranks the selections the same way.

Backtranslation is left out: it needs a corpus of documents, and none ships with the project (give
one with `--docs DIR` to add it). Nothing is asserted; the tables and the wall time of each step are
printed, and written to `--out` (default `out/method-table/`).

Run: `.venv/bin/python bench/method_table.py` (about 90 minutes on 2 CPU cores with the embedded
model), `--help` for the sizes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

SYNTH = str(Path(sys.executable).with_name("synth"))


def run(args: list[str], log: list[dict]) -> None:
    started = time.monotonic()
    print("$ synth " + " ".join(args), flush=True)
    result = subprocess.run([SYNTH, *args], capture_output=True, text=True)
    seconds = time.monotonic() - started
    log.append({"command": "synth " + " ".join(args), "seconds": round(seconds, 1), "rc": result.returncode})
    tail = (result.stdout + result.stderr).strip().splitlines()[-3:]
    print(f"  {seconds:.0f} s, exit {result.returncode}: " + " | ".join(tail), flush=True)
    if result.returncode != 0:
        raise SystemExit(f"failed: synth {' '.join(args)}\n{result.stdout}\n{result.stderr}")


def reference(path: Path) -> Path:
    """The shipped English seed tasks' first instances as reference pairs."""
    from synth.generators.seeds import load_seed_tasks

    rows = [
        {"instruction": t.instruction, "input": t.instances[0].input, "output": t.instances[0].output}
        for t in load_seed_tasks(None, "en")
        if t.instances
    ]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def records(dataset: Path) -> int:
    """Kept records of a dataset, from its manifest."""
    from synth.shards.layout import read_manifest

    return sum(shard.rows for shard in read_manifest(dataset).shards if shard.kind == "kept")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("out/method-table"))
    parser.add_argument("--num", type=int, default=60, help="records each generator aims for")
    parser.add_argument(
        "--unnatural-prompts",
        type=int,
        default=240,
        help="core prompts Unnatural Instructions asks (16 of 60 were kept on the embedded model, with paraphrases)",
    )
    parser.add_argument("--codeclm-seeds", type=int, default=8, help="seed instructions CodecLM encodes")
    parser.add_argument("--budget", type=int, default=40, help="records per dataset in each comparison")
    parser.add_argument("--profile", default="small-model")
    parser.add_argument("--engine-config", default=None)
    parser.add_argument("--docs", default=None, help="a documents folder: adds backtranslation")
    parser.add_argument("--reference", default=None, help="reference pairs (default: the seed tasks' answers)")
    parser.add_argument("--fresh", action="store_true", help="remove --out first")
    parser.add_argument(
        "--benchmark", action="append", default=None, help="benchmarks every model answers (default: ifbench)"
    )
    parser.add_argument("--benchmark-limit", type=int, default=40, help="prompts or problems of each benchmark")
    args = parser.parse_args()
    if args.fresh and args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    ref = Path(args.reference) if args.reference else reference(args.out / "reference.jsonl")
    engine = ["--engine-config", args.engine_config] if args.engine_config else []
    common = ["--profile", args.profile, *engine]
    log: list[dict] = []
    started = time.monotonic()
    datasets = {name: args.out / name for name in ("self-instruct", "magpie", "evol")}
    # Without the seed tasks' own records: they are the default reference, and a selection drawn
    # from a pool holding them would lose them to the held-out check, leaving unequal budgets.
    si = ["generate", "self-instruct", "--num", str(args.num), "--no-include-seed-tasks"]
    run([*si, "--out", str(datasets["self-instruct"]), *common], log)
    run(["generate", "magpie", "--num", str(args.num), "--out", str(datasets["magpie"]), *common], log)
    from synth.generators.seeds import default_seeds

    seeds = str(default_seeds("en"))
    run(["generate", "evol", "--from", seeds, "--limit", str(args.num), "--out", str(datasets["evol"]), *common], log)
    # Unnatural Instructions: one prompt per core example, each kept one expanded by paraphrases.
    datasets["unnatural"] = args.out / "unnatural"
    prompts = ["--num", str(args.unnatural_prompts)]
    run(["generate", "unnatural", *prompts, "--out", str(datasets["unnatural"]), *common], log)
    # CodecLM from the first seed tasks, the engine's model as both strong and target model.
    datasets["codeclm"] = args.out / "codeclm"
    limit = ["--limit", str(args.codeclm_seeds)]
    run(["generate", "codeclm", *limit, "--out", str(datasets["codeclm"]), *common], log)
    # The Self-Instruct pool recycled by reflection (teacher and student: the engine's model).
    datasets["recycled"] = args.out / "recycled"
    run(["recycle", str(datasets["self-instruct"]), "--out", str(datasets["recycled"]), *common], log)
    if args.docs:
        datasets["backtranslation"] = args.out / "backtranslation"
        run(["generate", "backtranslate", "--docs", args.docs, "--out", str(datasets["backtranslation"]), *common], log)
    kept = {name: records(path) for name, path in datasets.items()}
    short = {name: n for name, n in kept.items() if n < args.budget}
    for name, n in short.items():
        print(f"{name}: {n} records kept, fewer than the budget of {args.budget}: left out of the comparison")
        del datasets[name]
    # 20 steps per fine-tune, as the recorded table was made (the commands' default is one epoch).
    budget = ["--budget", str(args.budget), "--reference", str(ref), "--max-steps", "20"]
    for name in args.benchmark or ["ifbench"]:
        budget += ["--benchmark", name]
    budget += ["--benchmark-limit", str(args.benchmark_limit)]
    run(["compare", *map(str, datasets.values()), *budget, "--out", str(args.out / "by-generator")], log)
    pool = datasets["self-instruct"]
    selections = []
    for method in ("random", "longest", "ifd", "deita"):
        target = args.out / f"select-{method}"
        if not target.exists():
            run(
                ["select", str(pool), "--method", method, "--budget", str(args.budget), "--out", str(target), *engine],
                log,
            )
        selections.append(str(target))
    run(["compare", *selections, *budget, "--out", str(args.out / "by-selection")], log)
    total = time.monotonic() - started
    summary = {"total_seconds": round(total, 1), "kept": kept, "left_out": sorted(short), "steps": log}
    (args.out / "commands.json").write_text(json.dumps(summary, indent=2))
    for table in ("by-generator", "by-selection"):
        print(f"\n## {table}\n")
        print((args.out / table / "compare.md").read_text())
    print(f"total {total / 60:.1f} min")


if __name__ == "__main__":
    main()
