"""The dataset card: a README.md in the Hugging Face format, built from the manifest alone."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from synth.schemas import Manifest, RunInfo
from synth.schemas.records import Block, generator_block
from synth.shards.atomic import atomic_write_bytes
from synth.shards.columns import shard_schema


def _feature(dtype: Any) -> dict:
    """The `datasets` feature spec of a column type, as the card's YAML writes it."""
    if isinstance(dtype, pl.List):
        inner = _feature(dtype.inner)
        return {"list": inner["struct"]} if "struct" in inner else {"sequence": inner["dtype"]}
    if isinstance(dtype, pl.Struct):
        return {"struct": [{"name": f.name, **_feature(f.dtype)} for f in dtype.fields]}
    if isinstance(dtype, pl.Datetime):
        return {
            "dtype": f"timestamp[{dtype.time_unit}, tz={dtype.time_zone}]"
            if dtype.time_zone
            else f"timestamp[{dtype.time_unit}]"
        }
    names = {pl.String: "string", pl.Int64: "int64", pl.Float64: "float64", pl.Boolean: "bool"}
    return {"dtype": names[dtype.base_type()]}


def features(schema: pl.Schema | None = None) -> list[dict]:
    return [{"name": name, **_feature(dtype)} for name, dtype in (schema or shard_schema()).items()]


def _size_category(n: int) -> str:
    for bound, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < bound:
            return label
    return "n>1M"


def card_header(manifest: Manifest) -> dict:
    configs = []
    if any(s.kind == "kept" for s in manifest.shards):
        configs.append({"config_name": "default", "data_files": [{"split": "train", "path": "data/*.parquet"}]})
    if any(s.kind == "rejects" for s in manifest.shards):
        configs.append({"config_name": "rejects", "data_files": [{"split": "train", "path": "rejects/*.parquet"}]})
    generators = sorted({run.generator for run in manifest.runs.values()})
    kept = manifest.rows("kept")
    return {
        "configs": configs,
        "dataset_info": {
            "config_name": "default",
            "features": features(),
            "splits": [
                {
                    "name": "train",
                    "num_examples": kept,
                    "num_bytes": sum(s.bytes for s in manifest.shards if s.kind == "kept"),
                }
            ],
        },
        "license": "other",
        "language": sorted({str(run.config.get("language") or "en") for run in manifest.runs.values()} or {"en"}),
        "task_categories": ["text-generation"],
        "size_categories": [_size_category(kept)],
        "tags": ["synthetic", "instruction-tuning", *generators],
        "pretty_name": "Synthetic instruction data",
    }


EVALUATION_FILE = "evaluation.json"  # written beside the manifest by `synth evaluate`
CALIBRATION_FILE = "judge_calibration.json"  # written beside the manifest by `synth judge-check --dataset`


def render_card(manifest: Manifest, evaluation: dict | None = None, calibration: dict | None = None) -> str:
    header = yaml.safe_dump(card_header(manifest), sort_keys=False)
    kept, rejected = manifest.rows("kept"), manifest.rows("rejects")
    lines = [
        "---",
        header.rstrip(),
        "---",
        "",
        "# Synthetic instruction data",
        "",
        f"{kept} kept records and {rejected} rejects, generated with a local model and curated.",
        "",
        "## How it was made",
        "",
        "| run | generator | model | batches | kept | rejected | status |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in manifest.runs.values():
        lines.append(
            f"| `{run.run_id}` | {run.generator} | {run.model} | {run.batches_done} | {run.kept} | {run.rejected} | {run.status} |"
        )
    lines += [
        "",
        "Each run's full configuration is in `manifest.json`.",
        "",
        "## Funnel: rejects by stage and reason",
        "",
    ]
    by_reason = manifest.rejects_by_reason()
    if by_reason:
        lines += ["| stage | reason | count |", "|---|---|---|"]
        for stage, reasons in sorted(by_reason.items()):
            for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
                lines.append(f"| {stage} | {reason} | {n} |")
    else:
        lines.append("No rejects.")
    lines += _block_sections(manifest)
    lines += stored_section("Proxy evaluation", EVALUATION_FILE, evaluation, evaluation_lines)
    lines += stored_section("Judge calibration", CALIBRATION_FILE, calibration, calibration_lines)
    lines += [
        "",
        "## Loading",
        "",
        "```python",
        "import polars as pl",
        'pl.read_parquet("data/*.parquet")          # kept records',
        'pl.read_parquet("rejects/*.parquet")       # rejects, with stage and reason',
        "from datasets import load_dataset",
        'load_dataset("parquet", data_files="data/*.parquet")',
        "```",
        "",
        "## Caveats",
        "",
        "The instructions and outputs were written by a language model and filtered automatically;",
        "they can be wrong, repetitive or unsafe. Small default models produce low-quality text: this",
        "data is for trying the pipeline, not for training, unless a capable model generated it.",
        "",
    ]
    return "\n".join(lines)


def _block_sections(manifest: Manifest) -> list[str]:
    """What each generator's own block holds, for the blocks of the generators that ran (the
    block says it: `Block.card_section`)."""
    runs: dict[type[Block], list[RunInfo]] = {}
    for run in manifest.runs.values():
        if (block := generator_block(run.generator)) is not None:
            runs.setdefault(block, []).append(run)
    return [line for block, its_runs in runs.items() for line in block.card_section(its_runs)]


def stored_section(title: str, file: str, data: dict | None, body: Callable[[dict], list[str]]) -> list[str]:
    """A section made from a report stored beside the manifest (`body` of its data), where one is."""
    if not data:
        return []
    try:
        return ["", f"## {title}", "", *body(data), f"`{file}`."]
    except (KeyError, TypeError, ValueError, AttributeError):
        return ["", f"## {title}", "", f"`{file}` is present but does not read; see the file."]


def _benchmark_lines(benchmarks: dict, differences: dict) -> list[str]:
    """Each benchmark's scores for both models: a code benchmark's pass@1 (HumanEval, greedy, run
    in the sandbox), an instruction-following benchmark's strict and loose accuracies."""
    lines = []
    for name, scores in benchmarks.items():
        base, tuned = scores["base"], scores["tuned"]
        if "strict_prompt" in base:
            diff = differences.get(name)
            left = sum(base.get("left_out", {}).values())
            lines += [
                f"{name} instruction following (greedy, {base['prompts']} prompts checked by programs"
                f"{f', {left} left out' if left else ''}):",
                "",
                "| model | strict prompt | strict instruction | loose prompt | loose instruction |",
                "|---|---|---|---|---|",
                *(
                    f"| {label} | {s['strict_prompt']:.3f} | {s['strict_instruction']:.3f} | "
                    f"{s['loose_prompt']:.3f} | {s['loose_instruction']:.3f} |"
                    for label, s in (("base", base), ("tuned on this data", tuned))
                ),
                "",
                *_difference_line(diff),
            ]
            continue
        lines += [
            f"{name} pass@1 (greedy, {base['problems']} problems, programs run in the sandbox):",
            "",
            "| model | passed | pass@1 |",
            "|---|---|---|",
            f"| base | {base['passed']} | {base['pass_at_1']:.3f} |",
            f"| tuned on this data | {tuned['passed']} | {tuned['pass_at_1']:.3f} |",
            "",
            *_difference_line(differences.get(name)),
        ]
    return lines


def _difference_line(diff: dict | None) -> list[str]:
    if not diff:
        return []
    by_seed = diff.get("seed_values") or []
    seeds = f" The tuned model's by fine-tuning seed: {', '.join(f'{v:.3f}' for v in by_seed)}." if by_seed else ""
    return [
        f"Tuned minus base, {diff['metric']}: {diff['difference']:+.3f} (95% paired bootstrap "
        f"interval {diff['low']:+.3f} to {diff['high']:+.3f}).{seeds}",
        "",
    ]


def evaluation_lines(evaluation: dict) -> list[str]:
    """The proxy evaluation (`synth evaluate`) of the dataset."""
    benchmarks = _benchmark_lines(evaluation.get("benchmarks", {}), evaluation.get("differences", {}))
    if not evaluation.get("reference_pairs"):  # benchmarks only
        return [
            f"`synth evaluate` fine-tuned {evaluation['config'].get('base', 'the base model')} with LoRA for "
            f"{evaluation['train_steps']} steps on {evaluation['examples']} records of this dataset and scored "
            "both models on benchmarks (no reference pairs, so no loss):",
            "",
            *benchmarks,
            "Compare datasets only on the same base, budget and seed; the full record is",
        ]
    base, tuned = evaluation["base"]["loss"], evaluation["tuned"]["loss"]
    return [
        f"`synth evaluate` fine-tuned {evaluation['config'].get('base', 'the base model')} with LoRA for "
        f"{evaluation['train_steps']} steps on {evaluation['examples']} records of this dataset and scored",
        f"both models on {evaluation['reference_pairs']} reference pairs (`{evaluation['reference']}`):",
        "",
        "| model | loss per reply token |",
        "|---|---|",
        f"| base | {base:.4f} |",
        f"| tuned on this data | {tuned:.4f} |",
        "",
        *(
            [
                f"The tuned loss is the mean of {evaluation['seeds']} fine-tuning seeds ("
                f"{', '.join(f'{x:.4f}' for x in evaluation['seed_losses'])}; spread {evaluation['seed_spread']:.4f}).",
                "",
            ]
            if evaluation.get("seed_losses")
            else []
        ),
        *benchmarks,
        f"Improvement {evaluation['improvement']:.4f} ({evaluation['relative_improvement']:.1%} of the base "
        "loss). Compare datasets only on the same reference, base, budget and seed; the full record is",
    ]


def calibration_lines(calibration: dict) -> list[str]:
    """How well the curation judge separated good from bad responses (`synth judge-check`)."""
    auc = "n/a" if calibration["auc"] is None else f"{calibration['auc']:.3f}"
    agreement = "n/a" if calibration["agreement"] is None else f"{calibration['agreement']:.1%}"
    good, bad = calibration["by_label"]["good"], calibration["by_label"]["bad"]
    return [
        f"`synth judge-check` graded {calibration['responses']} responses of known quality "
        f"({calibration['source']}) with the judge `{calibration['judge_model']}` (rubric "
        f"`{calibration['judge_rubric']}`): ROC AUC {auc}, agreement {agreement} at threshold "
        f"{calibration['threshold']}; it dropped {good['dropped']} of {good['n']} good and {bad['dropped']} of "
        f"{bad['n']} bad responses ({calibration['unparseable']} replies did not parse). The full report is",
    ]


def read_report(path: Path) -> dict | None:
    """A report stored beside the manifest (the evaluation, the judge calibration) as a dict; None
    where there is none, or it is not a JSON object."""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_card(path: Path, manifest: Manifest) -> None:
    card = render_card(manifest, read_report(path / EVALUATION_FILE), read_report(path / CALIBRATION_FILE))
    atomic_write_bytes(path / "README.md", card.encode())
