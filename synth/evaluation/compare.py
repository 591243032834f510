"""Which dataset makes the better fine-tune? Several datasets, one budget, one reference, one table.

Each dataset gives the same number of records (a seeded draw, after removing every record whose
instruction is also a reference prompt: the reference must be held out, not only reported), the
same base model is fine-tuned on each the same way (`EvaluationConfig`: steps, learning rate,
LoRA, seed), and every model, the base included, is scored on the same reference pairs: the loss
per completion token, lower is better. Differences come with a paired bootstrap interval over the
reference pairs (the same resampled pairs for both sides of a difference, seeded), so a difference
whose interval holds 0 is not told apart from noise.

With instruction-following benchmarks in the config (`ifbench`, or an IFEval-format file), every
model also answers the benchmark's prompts (greedy, in its chat template) and each row gets the
strict and loose prompt-level accuracy; differences in strict accuracy (higher is better) come
with the same kind of interval, over the prompts.
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from synth.training.bootstrap import RESAMPLES, loss, paired_interval
from synth.training.config import EvaluationConfig
from synth.training.data import Examples, TrainingDataError, held_out
from synth.training.ifbench import InstructionScore, benchmark_name, instruction_following
from synth.training.model import completion_losses, encode_for, load_model, resolve_base, working_on
from synth.training.sft import train

Say = Callable[[str], None]


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
) -> dict[str, Any]:
    """Fine-tune the base on `budget` records of each of `sources` (each named by its source) and
    score every model on the reference pairs `ref` (see the module's docstring); returns the table
    as data. With `seeds` above 1 each dataset is
    fine-tuned once per seed (`config.seed` onward, the same records each time): its loss is the
    mean over the seeds, with their spread (standard deviation), and the intervals are taken on
    each reference pair's loss averaged over the seeds."""
    import torch

    config = config or EvaluationConfig()
    say = progress or (lambda line: None)
    # model name -> benchmark -> its score, one per fine-tuning seed
    answers: dict[str, dict[str, list[InstructionScore]]] = {}
    following = config.instruction_benchmarks()
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

        def score(path: str, name: str) -> tuple[list[float], list[int]]:
            model = load_model(path, device, torch.float32)
            try:
                for source in following:
                    answers.setdefault(name, {}).setdefault(source, []).append(
                        instruction_following(
                            name,
                            model,
                            tokenizer,
                            source,
                            limit=config.benchmark_limit,
                            max_new_tokens=config.benchmark_max_tokens,
                            progress=say,
                        )
                    )
                return completion_losses(model, encoded.items, pad)
            finally:
                del model

        say(f"scoring the base model {base.name} on {len(encoded.items)} reference pairs")
        scores = {"base": score(base.path, "base")}
        rows: list[dict[str, Any]] = [
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
            mean = sum(by_seed) / seeds
            rows.append(
                {
                    "dataset": name,
                    "records": len(data.items),
                    "removed_overlap": removed,
                    "loss": round(loss(*scores[name]), 6),
                    "seed_losses": by_seed,
                    "seed_spread": round((sum((x - mean) ** 2 for x in by_seed) / max(1, seeds - 1)) ** 0.5, 6),
                }
            )
    names = [data.source for data, _ in drawn]
    for row in rows[1:]:
        change, low, high = paired_interval(scores["base"], scores[row["dataset"]], config.seed)
        row |= {"vs_base": change, "vs_base_low": low, "vs_base_high": high, "significant": high < 0 or low > 0}
    pairs = _pairs(names, scores.__getitem__, config.seed, higher_is_better=False)
    best = min(rows[1:], key=lambda r: r["loss"])["dataset"]
    benchmarks = {benchmark_name(source): _following_table(answers, source, names, config.seed) for source in following}
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
    }


def _following_table(
    answers: dict[str, dict[str, list[InstructionScore]]], source: str, names: list[str], seed: int
) -> dict[str, Any]:
    """One instruction-following benchmark across the models: per model the accuracies (means over
    its fine-tuning seeds) and strict prompt-level accuracy against the base and between datasets,
    each with its 95% paired bootstrap interval over the prompts (per prompt, the share of seeds
    whose answer followed every instruction)."""

    def followed(name: str) -> tuple[list[float], list[int]]:
        runs = answers[name][source]
        return [sum(r.followed[i] for r in runs) / len(runs) for i in range(len(runs[0].followed))], [1] * len(
            runs[0].followed
        )

    rows = []
    for name in ["base", *names]:
        runs = answers[name][source]
        row: dict[str, Any] = {
            "dataset": name,
            **{k: round(sum(getattr(r, k) for r in runs) / len(runs), 4) for k in _ACCURACIES},
        }
        if name != "base":
            change, low, high = paired_interval(followed("base"), followed(name), seed)
            row |= {"vs_base": change, "vs_base_low": low, "vs_base_high": high, "significant": high < 0 or low > 0}
        rows.append(row)
    pairs = _pairs(names, followed, seed, higher_is_better=True)
    first_run = answers["base"][source][0]
    return {"prompts": first_run.prompts, "left_out": first_run.left_out, "rows": rows, "pairs": pairs}


def _pairs(
    names: list[str],
    items: Callable[[str], tuple[Sequence[float], Sequence[int]]],
    seed: int,
    higher_is_better: bool,
) -> list[dict[str, Any]]:
    """Each pair of datasets' difference (b minus a, on their per-item scores `items(name)`), its
    95% paired bootstrap interval, and the better one where the interval excludes 0."""
    pairs = []
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            change, low, high = paired_interval(items(first), items(second), seed)
            up, down = (second, first) if higher_is_better else (first, second)
            better = up if low > 0 else down if high < 0 else None
            pairs.append({"a": first, "b": second, "b_minus_a": change, "low": low, "high": high, "better": better})
    return pairs


_ACCURACIES = ("strict_prompt", "strict_instruction", "loose_prompt", "loose_instruction")


def markdown(table: dict[str, Any]) -> str:
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
        for row in bench["rows"]:
            change = (
                f"{row['vs_base']:+.3f}{' *' if row['significant'] else ''} | "
                f"[{row['vs_base_low']:+.3f}, {row['vs_base_high']:+.3f}]"
                if "vs_base" in row
                else " | "
            )
            lines.append(
                f"| {row['dataset']} | {row['strict_prompt']:.3f} | {row['strict_instruction']:.3f} | "
                f"{row['loose_prompt']:.3f} | {row['loose_instruction']:.3f} | {change} |"
            )
        for p in bench["pairs"]:
            verdict = f"{p['better']} is better" if p["better"] else "not told apart"
            lines.append(f"\n{p['b']} - {p['a']}: {p['b_minus_a']:+.3f} [{p['low']:+.3f}, {p['high']:+.3f}]: {verdict}")
    return "\n".join(lines) + "\n"
