"""`synth compare`: several datasets, one budget, one reference, one table."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.text import Text

from synth.cli.errors import fail
from synth.cli.options import path_argument, path_option
from synth.cli.output import console, err, table
from synth.cli.tuning import BenchmarkOptions, TuningOptions, checked, option_groups
from synth.flows import api

if TYPE_CHECKING:
    from synth.evaluation.compare import BenchmarkRow, LossRow, PairDifference


@option_groups
def compare(
    datasets: Annotated[list[Path], path_argument("DATASETS", help="Two or more dataset directories (or files).")],
    reference: Annotated[
        Path,
        path_option(
            "--reference",
            help="Held-out reference pairs: a JSONL or Parquet file of instruction/input/output (or a dataset).",
        ),
    ],
    budget: Annotated[
        int | None, typer.Option("--budget", min=1, help="Records drawn from each dataset (seeded); default: all.")
    ] = None,
    *,
    tuning: TuningOptions,
    benchmarks: BenchmarkOptions,
    out: Annotated[
        Path | None, path_option("--out", help="Folder to write the table into (compare.json, compare.md).")
    ] = None,
) -> None:
    """Fine-tune the same base the same way on an equal budget of each dataset, score every model on
    the same held-out reference pairs (records whose prompt is a reference prompt are removed first)
    and print one table: loss per token, the change from the base and between datasets, with 95%
    paired bootstrap intervals. With --benchmark, every model also answers the benchmark (greedy, by
    vLLM unless --benchmark-engine transformers) and gets a table of its own, with the same intervals."""
    import json

    api.prepare_process()
    from synth.training import EvaluationConfig
    from synth.training.data import load_examples
    from synth.training.model import resolve_base

    tuning.check()
    if len(datasets) < 2:
        fail("give two or more datasets to compare")
    if len({p.resolve() for p in datasets}) != len(datasets):
        fail("a dataset is named twice")
    if out is not None and out.exists() and not out.is_dir():
        fail(f"--out {out}: exists and is not a folder")
    benchmarks.check()
    sources = [checked(load_examples, path) for path in datasets]  # read once: bad files fail before a model loads
    ref = checked(load_examples, reference)
    checked(resolve_base, tuning.base)
    config = EvaluationConfig(**tuning.config_fields(), **benchmarks.config_fields())

    def say(line: str) -> None:
        err.print(Text(line), soft_wrap=True)

    from synth.evaluation.compare import compare_datasets, markdown

    result = checked(compare_datasets, sources, ref, config, budget, say, tuning.seeds)
    rows = [
        {
            "dataset": r["dataset"],
            "records": r["records"] or "",
            "overlap removed": r["removed_overlap"] or "",
            "loss": f"{r['loss']:.4f}"
            + (f" ± {r['seed_spread']:.4f}" if tuning.seeds > 1 and "seed_spread" in r else ""),
            "vs base (interval; * excludes 0)": _change(r),
        }
        for r in result["rows"]
    ]
    console.print(table(f"Loss on {result['reference_pairs']} reference pairs", rows, list(rows[0])))
    _print_pairs(result["pairs"], 4)
    for name, bench in result["benchmarks"].items():
        if bench["kind"] == "code":
            title = f"{name}: pass@1 on {bench['problems']} problems"
            rows = [
                {
                    "dataset": r["dataset"],
                    "pass@1": f"{r['pass_at_1']:.3f}",
                    "vs base (interval; * excludes 0)": _change(r, 3),
                }
                for r in bench["rows"]
            ]
        else:
            title = f"{name}: instruction following on {bench['prompts']} prompts"
            rows = [
                {
                    "dataset": r["dataset"],
                    "strict prompt": f"{r['strict_prompt']:.3f}",
                    "loose prompt": f"{r['loose_prompt']:.3f}",
                    "vs base (interval; * excludes 0)": _change(r, 3),
                }
                for r in bench["rows"]
            ]
        console.print(table(title, rows, list(rows[0])))
        _print_pairs(bench["pairs"], 3)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "compare.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        (out / "compare.md").write_text(markdown(result), encoding="utf-8")
        console.print(Text(f"written to {out / 'compare.json'} and {out / 'compare.md'}"), soft_wrap=True)


def _print_pairs(pairs: list[PairDifference], digits: int) -> None:
    """Each pair of datasets' difference (b - a) with its interval, and which is better, if either."""
    for p in pairs:
        verdict = f"{p['better']} is better" if p["better"] else "not told apart"
        change = f"{p['b_minus_a']:+.{digits}f} [{p['low']:+.{digits}f}, {p['high']:+.{digits}f}]"
        console.print(Text(f"{p['b']} - {p['a']}: {change}: {verdict}"), soft_wrap=True)


def _change(row: LossRow | BenchmarkRow, digits: int = 4) -> str:
    if "vs_base" not in row:
        return ""
    mark = " *" if row["significant"] else ""
    return f"{row['vs_base']:+.{digits}f} [{row['vs_base_low']:+.{digits}f}, {row['vs_base_high']:+.{digits}f}]{mark}"
