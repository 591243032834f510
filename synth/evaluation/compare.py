"""Which dataset makes the better fine-tune? Several datasets, one budget, one reference, one table.

Each dataset gives the same number of records (a seeded draw, after removing every record whose
instruction is also a reference prompt: the reference must be held out, not only reported), the
same base model is fine-tuned on each the same way (`EvaluationConfig`: steps, learning rate,
LoRA, seed), and every model, the base included, is scored on the same reference pairs: the loss
per completion token, lower is better. Differences come with a paired bootstrap interval over the
reference pairs (the same resampled pairs for both sides of a difference, seeded), so a difference
whose interval holds 0 is not told apart from noise.

With benchmarks in the config, every model also answers the benchmark's prompts (greedy; vLLM
by default, see `synth.training.answering`): instruction following (`ifbench`, or an
IFEval-format file) gives each row the strict and loose accuracies, HumanEval its pass@1 (programs
run in the sandbox); differences in the headline metric (strict prompt-level accuracy, pass@1;
higher is better) come with the same kind of interval, over the prompts or problems.
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, NotRequired

from typing_extensions import TypedDict

from synth.training.answering import answer_dtype, answers_for
from synth.training.bootstrap import RESAMPLES, loss, paired_interval, standard_deviation
from synth.training.config import EvaluationConfig
from synth.training.data import Examples, TrainingDataError, held_out
from synth.training.humaneval import BenchmarkScore
from synth.training.ifbench import InstructionScore
from synth.training.model import completion_losses, encode_for, load_model, resolve_base, working_on
from synth.training.scoring import Benchmarking, outcomes, score_benchmarks
from synth.training.sft import train

Say = Callable[[str], None]


class VsBase(TypedDict):
    """A model's difference from the base on the table's metric, with its 95% paired bootstrap
    interval, and whether the interval excludes 0."""

    vs_base: float
    vs_base_low: float
    vs_base_high: float
    significant: bool


class LossRow(TypedDict):
    """One model's loss per completion token on the reference pairs (the base's row has no
    difference, and no seeds)."""

    dataset: str
    records: int
    removed_overlap: int
    loss: float
    seed_losses: NotRequired[list[float]]
    seed_spread: NotRequired[float]
    vs_base: NotRequired[float]
    vs_base_low: NotRequired[float]
    vs_base_high: NotRequired[float]
    significant: NotRequired[bool]


class PairDifference(TypedDict):
    """Dataset b minus dataset a, its interval, and the better one where the interval excludes 0."""

    a: str
    b: str
    b_minus_a: float
    low: float
    high: float
    better: str | None


class BenchmarkRow(TypedDict):
    """One model on a benchmark: the accuracies (instruction following) or pass@1 (code), means
    over its fine-tuning seeds, and its difference from the base."""

    dataset: str
    strict_prompt: NotRequired[float]
    strict_instruction: NotRequired[float]
    loose_prompt: NotRequired[float]
    loose_instruction: NotRequired[float]
    pass_at_1: NotRequired[float]
    vs_base: NotRequired[float]
    vs_base_low: NotRequired[float]
    vs_base_high: NotRequired[float]
    significant: NotRequired[bool]


class BenchmarkTable(TypedDict):
    """One benchmark across the models: instruction following (its prompts, and those left out by
    reason) or code (its problems)."""

    kind: Literal["instruction following", "code"]
    rows: list[BenchmarkRow]
    pairs: list[PairDifference]
    prompts: NotRequired[int]
    left_out: NotRequired[dict[str, int]]
    problems: NotRequired[int]


class Comparison(TypedDict):
    """The comparison as data (what `synth compare` prints and writes as JSON)."""

    reference: str
    reference_pairs: int
    base: str
    budget: int | None
    seeds: int
    config: dict[str, Any]
    resamples: int
    rows: list[LossRow]
    pairs: list[PairDifference]
    lowest_loss: str
    benchmarks: dict[str, BenchmarkTable]
    answered_with: str


def _vs_base(change: float, low: float, high: float) -> VsBase:
    return {"vs_base": change, "vs_base_low": low, "vs_base_high": high, "significant": high < 0 or low > 0}


def draw(data: Examples, reference: Examples, budget: int | None, seed: int) -> tuple[Examples, int]:
    """`budget` examples of `data` drawn with `seed` (all of them when it holds fewer), none of whose
    instruction is a reference prompt; and how many overlapping examples were removed."""
    left, removed = held_out(data, reference)
    kept = left.items
    if budget is not None and budget < len(kept):
        kept = random.Random(f"compare:{seed}").sample(kept, budget)
    return Examples(kept, data.source, data.skipped), removed


def compare_datasets(
    sources: Sequence[Examples],
    ref: Examples,
    config: EvaluationConfig | None = None,
    budget: int | None = None,
    progress: Say | None = None,
    seeds: int = 1,
) -> Comparison:
    """Fine-tune the base on `budget` records of each of `sources` (each named by its source) and
    score every model on the reference pairs `ref` (see the module's docstring); returns the table
    as data. With `seeds` above 1 each dataset is
    fine-tuned once per seed (`config.seed` onward, the same records each time): its loss is the
    mean over the seeds, with their spread (standard deviation), and the intervals are taken on
    each reference pair's loss averaged over the seeds."""
    import torch

    config = config or EvaluationConfig()
    say = progress or (lambda line: None)
    # model name -> benchmark name -> its score, one per fine-tuning seed
    answers: dict[str, dict[str, list[InstructionScore | BenchmarkScore]]] = {}
    base = resolve_base(config.base)
    drawn = [draw(data, ref, budget, config.seed) for data in sources]
    for data, _ in drawn:
        if not data.items:
            raise TrainingDataError(
                f"{data.source}: no records left once those whose prompt is a reference prompt are removed"
            )
    with working_on(config.device, config.threads) as (device, _):
        tokenizer, encoded = encode_for(
            base.path, ref.items, ref.source, "forward", config.max_length, "reference pair"
        )
        pad = tokenizer.pad_token_id

        answered_in = ["auto"]  # every model answers in the precision the base answered in

        def score(path: str, name: str) -> tuple[list[float], list[int]]:
            model = load_model(path, device, torch.float32)
            losses = completion_losses(model, encoded.items, pad)
            if config.benchmarks:
                if config.benchmark_engine != "transformers":
                    model = None  # vLLM loads its own copy
                with answers_for(config.benchmark_engine, path, model, tokenizer, answered_in[0], config.seed) as made:
                    answered_in[0] = answer_dtype(made) if config.benchmark_engine == "vllm" else "float32"
                    for bench, scored in score_benchmarks(name, made, Benchmarking(config, tokenizer, say)).items():
                        answers.setdefault(name, {}).setdefault(bench, []).append(scored)
            del model
            return losses

        say(f"scoring the base model {base.name} on {len(encoded.items)} reference pairs")
        scores = {"base": score(base.path, "base")}
        rows: list[LossRow] = [
            {"dataset": "base", "records": 0, "removed_overlap": 0, "loss": round(loss(*scores["base"]), 6)}
        ]
        for data, removed in drawn:
            name = data.source
            runs = []
            for k in range(seeds):
                run = config.model_copy(update={"seed": config.seed + k})
                say(f"fine-tuning on {len(data.items)} records of {name} ({config.budget()}, seed {run.seed})")
                with tempfile.TemporaryDirectory(prefix="synth-compare-") as scratch:
                    tuned = train(run.training(Path(scratch) / "tuned"), data, progress=say)
                    runs.append(score(str(tuned), name))
            # Each reference pair's loss averaged over the fine-tuning seeds (its token count is the same).
            scores[name] = ([sum(r[0][i] for r in runs) / seeds for i in range(len(runs[0][0]))], runs[0][1])
            by_seed = [round(loss(*r), 6) for r in runs]
            rows.append(
                {
                    "dataset": name,
                    "records": len(data.items),
                    "removed_overlap": removed,
                    "loss": round(loss(*scores[name]), 6),
                    "seed_losses": by_seed,
                    "seed_spread": round(standard_deviation(by_seed), 6),
                }
            )
    names = [data.source for data, _ in drawn]
    for row in rows[1:]:
        row.update(_vs_base(*paired_interval(scores["base"], scores[row["dataset"]], config.seed)))
    pairs = _pairs(names, scores.__getitem__, config.seed, higher_is_better=False)
    best = min(rows[1:], key=lambda r: r["loss"])["dataset"]
    benchmarks = {bench: _benchmark_table(answers, bench, names, config.seed) for bench in answers.get("base", {})}
    return {
        "reference": ref.source,
        "reference_pairs": len(encoded.items),
        "base": base.name,
        "budget": budget,
        "seeds": seeds,
        "config": {"base": base.name, **config.identity()},
        "resamples": RESAMPLES,
        "rows": rows,
        "pairs": pairs,
        "lowest_loss": best,
        "benchmarks": benchmarks,
        "answered_with": f"{config.benchmark_engine} ({answered_in[0]})" if config.benchmarks else "",
    }


def _benchmark_table(
    answers: dict[str, dict[str, list[InstructionScore | BenchmarkScore]]], bench: str, names: list[str], seed: int
) -> BenchmarkTable:
    """One benchmark across the models: per model its metrics (means over its fine-tuning seeds) and
    its headline metric (strict prompt-level accuracy; pass@1) against the base and between
    datasets, each with its 95% paired bootstrap interval over the items (per item, the share of
    seeds that succeeded on it)."""

    def succeeded(name: str) -> tuple[list[float], list[int]]:
        runs = [outcomes(r)[1] for r in answers[name][bench]]
        return [sum(r[i] for r in runs) / len(runs) for i in range(len(runs[0]))], [1] * len(runs[0])

    first_run = answers["base"][bench][0]
    metrics = _ACCURACIES if isinstance(first_run, InstructionScore) else ("pass_at_1",)
    rows: list[BenchmarkRow] = []
    for name in ["base", *names]:
        runs = answers[name][bench]
        row: BenchmarkRow = {"dataset": name}
        for metric in metrics:  # one of the row's metric keys
            row[metric] = round(sum(getattr(r, metric) for r in runs) / len(runs), 4)  # type: ignore[literal-required]
        if name != "base":
            row.update(_vs_base(*paired_interval(succeeded("base"), succeeded(name), seed)))
        rows.append(row)
    pairs = _pairs(names, succeeded, seed, higher_is_better=True)
    if isinstance(first_run, InstructionScore):
        return {
            "kind": "instruction following",
            "prompts": first_run.prompts,
            "left_out": first_run.left_out,
            "rows": rows,
            "pairs": pairs,
        }
    return {"kind": "code", "problems": first_run.problems, "rows": rows, "pairs": pairs}


def _pairs(
    names: list[str],
    items: Callable[[str], tuple[Sequence[float], Sequence[int]]],
    seed: int,
    higher_is_better: bool,
) -> list[PairDifference]:
    """Each pair of datasets' difference (b minus a, on their per-item scores `items(name)`), its
    95% paired bootstrap interval, and the better one where the interval excludes 0."""
    pairs: list[PairDifference] = []
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            change, low, high = paired_interval(items(first), items(second), seed)
            up, down = (second, first) if higher_is_better else (first, second)
            better = up if low > 0 else down if high < 0 else None
            pairs.append({"a": first, "b": second, "b_minus_a": change, "low": low, "high": high, "better": better})
    return pairs


_ACCURACIES = ("strict_prompt", "strict_instruction", "loose_prompt", "loose_instruction")


def markdown(table: Comparison) -> str:
    """The comparison as a Markdown table, with the pairwise differences below it."""
    lines = [
        f"Reference: `{table['reference']}` ({table['reference_pairs']} pairs); base `{table['base']}`; "
        f"{table['budget'] or 'all'} records per dataset, {table['seeds']} fine-tuning seed(s); loss per "
        "completion token (lower is better), "
        f"95% paired bootstrap intervals ({table['resamples']} resamples).",
        "",
        "| dataset | records | overlap removed | loss | seed spread | vs base | interval |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in table["rows"]:
        if row["dataset"] == "base":
            lines.append(f"| base | | | {row['loss']:.4f} | | | |")
            continue
        mark = " *" if row["significant"] else ""
        spread = f"{row['seed_spread']:.4f}" if table["seeds"] > 1 else "-"
        lines.append(
            f"| {row['dataset']} | {row['records']} | {row['removed_overlap']} | {row['loss']:.4f} | {spread} | "
            f"{row['vs_base']:+.4f}{mark} | [{row['vs_base_low']:+.4f}, {row['vs_base_high']:+.4f}] |"
        )
    if table["pairs"]:
        lines += ["", "| a | b | loss b - a | interval | better |", "|---|---|---:|---|---|"]
        for p in table["pairs"]:
            lines.append(
                f"| {p['a']} | {p['b']} | {p['b_minus_a']:+.4f} | [{p['low']:+.4f}, {p['high']:+.4f}] | "
                f"{p['better'] or 'not told apart'} |"
            )
    for name, bench in table.get("benchmarks", {}).items():
        code = bench.get("kind") == "code"
        if code:
            lines += [
                "",
                f"{name}: pass@1 (greedy) on {bench['problems']} problems, run in the sandbox; against the base "
                "(higher is better).",
                "",
                "| dataset | pass@1 | vs base | interval |",
                "|---|---:|---:|---|",
            ]
        else:
            left = sum(bench["left_out"].values())
            lines += [
                "",
                f"{name}: instruction following, {bench['prompts']} prompts checked by programs"
                f"{f' ({left} left out)' if left else ''}; strict prompt-level accuracy against the base "
                "(higher is better).",
                "",
                "| dataset | strict prompt | strict instruction | loose prompt | loose instruction | vs base | interval |",
                "|---|---:|---:|---:|---:|---:|---|",
            ]
        for scored in bench["rows"]:
            change = (
                f"{scored['vs_base']:+.3f}{' *' if scored['significant'] else ''} | "
                f"[{scored['vs_base_low']:+.3f}, {scored['vs_base_high']:+.3f}]"
                if "vs_base" in scored
                else " | "
            )
            scores = (
                f"{scored['pass_at_1']:.3f}"
                if code
                else f"{scored['strict_prompt']:.3f} | {scored['strict_instruction']:.3f} | "
                f"{scored['loose_prompt']:.3f} | {scored['loose_instruction']:.3f}"
            )
            lines.append(f"| {scored['dataset']} | {scores} | {change} |")
        for p in bench["pairs"]:
            verdict = f"{p['better']} is better" if p["better"] else "not told apart"
            lines.append(f"\n{p['b']} - {p['a']}: {p['b_minus_a']:+.3f} [{p['low']:+.3f}, {p['high']:+.3f}]: {verdict}")
    return "\n".join(lines) + "\n"
