"""`synth compare`: equal budgets of several datasets fine-tune the same base the same way; every
model is scored on the same held-out reference, with paired bootstrap intervals."""

from __future__ import annotations

import json
import random

import pytest
from typer.testing import CliRunner

from synth.evaluation.compare import draw, paired_interval
from synth.training.data import Example, Examples

WORDS = [
    "river",
    "stone",
    "cloud",
    "lamp",
    "garden",
    "violin",
    "orange",
    "harbor",
    "pencil",
    "meadow",
    "candle",
    "rocket",
    "silver",
    "forest",
    "window",
]


def copy_pair(i: int) -> dict:
    words = " ".join(random.Random(i).sample(WORDS, 5))
    return {"instruction": f"Repeat these words exactly: {words}", "output": words}


def examples(rows) -> Examples:
    return Examples([Example(r["instruction"], "", r["output"]) for r in rows], "test")


def test_the_draw_removes_reference_prompts_then_takes_a_seeded_budget():
    data = examples([copy_pair(i) for i in range(30)])
    reference = examples([copy_pair(i) for i in (3, 7, 1000)])
    drawn, removed = draw(data, reference, budget=10, seed=0)
    held_out = {e.instruction for e in reference.items}
    assert removed == 2 and len(drawn.items) == 10 and not held_out & {e.instruction for e in drawn.items}
    assert drawn.items == draw(data, reference, budget=10, seed=0)[0].items  # the same draw every time
    assert drawn.items != draw(data, reference, budget=10, seed=1)[0].items
    everything, _ = draw(data, reference, budget=100, seed=0)
    assert len(everything.items) == 28  # a budget above what is left takes all of it


def test_the_paired_interval_holds_zero_for_equal_models_and_excludes_it_for_a_uniformly_better_one():
    rng = random.Random(0)
    sums = [rng.uniform(5, 20) for _ in range(40)]
    counts = [rng.randint(5, 12) for _ in range(40)]
    assert paired_interval((sums, counts), (sums, counts), seed=0) == (0.0, 0.0, 0.0)
    better = [s * 0.9 for s in sums]
    change, low, high = paired_interval((sums, counts), (better, counts), seed=0)
    assert low <= change <= high < 0
    # Items in twins: one twin 20% worse, the other 20% better, so the total is unchanged.
    twins, twin_counts = [s for s in sums for _ in (0, 1)], [c for c in counts for _ in (0, 1)]
    noisy = [s * (1.2 if i % 2 else 0.8) for i, s in enumerate(twins)]
    change, low, high = paired_interval((twins, twin_counts), (noisy, twin_counts), seed=0)
    assert low < change == 0.0 < high  # changes of both signs are not told apart from no change


@pytest.mark.engine  # fine-tunes the embedded model twice
def test_matching_pairs_beat_the_same_outputs_shuffled_against_their_instructions(tmp_path):
    from synth.cli import app

    matched = [copy_pair(i) for i in range(40)]
    outputs = [r["output"] for r in matched]
    shuffled = [{**r, "output": o} for r, o in zip(matched, outputs[1:] + outputs[:1], strict=True)]
    files = {}
    for name, rows in (
        ("matched", matched),
        ("shuffled", shuffled),
        ("reference", [copy_pair(i) for i in range(1000, 1016)]),
    ):
        files[name] = tmp_path / f"{name}.jsonl"
        files[name].write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "table"
    args = [
        "compare", str(files["shuffled"]), str(files["matched"]), "--reference", str(files["reference"]),
        "--budget", "32", "--max-steps", "8", "--batch-size", "4", "--max-length", "64", "--lr", "1e-3", "--out", str(out),
        "--seeds", "2", "--benchmark", "ifbench", "--benchmark", "humaneval", "--limit", "2", "--benchmark-max-tokens", "16",
        "--benchmark-engine", "transformers",  # five models: vLLM would load five times (its path: test_humaneval)
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    table = json.loads((out / "compare.json").read_text())
    loss = {row["dataset"]: row for row in table["rows"]}
    assert table["lowest_loss"] == str(files["matched"]) and table["reference_pairs"] == 16
    assert loss[str(files["matched"])]["loss"] < loss["base"]["loss"]
    assert loss[str(files["matched"])]["loss"] < loss[str(files["shuffled"])]["loss"]
    assert all(row["records"] == 32 for row in table["rows"][1:])
    # Two fine-tuning seeds each: the loss is their mean (the pairs' token counts do not change).
    for row in table["rows"][1:]:
        assert len(row["seed_losses"]) == 2 and row["seed_spread"] >= 0
        assert row["loss"] == pytest.approx(sum(row["seed_losses"]) / 2, abs=2e-6)
    assert table["seeds"] == 2
    (pair,) = table["pairs"]
    assert pair["better"] == str(files["matched"]) and pair["high"] < 0
    assert "matched.jsonl is better" in " ".join(result.output.split())
    assert "| base |" in (out / "compare.md").read_text()
    # Every model also answered the first IFBench prompt: accuracies averaged over the seeds, and
    # strict prompt-level differences with their intervals.
    assert table["answered_with"] == "transformers (float32)"
    following = table["benchmarks"]["ifbench"]
    names = ["base", str(files["shuffled"]), str(files["matched"])]
    assert following["prompts"] == 2 and [r["dataset"] for r in following["rows"]] == names
    for row in following["rows"]:
        assert row["strict_prompt"] in (0.0, 0.25, 0.5, 0.75, 1.0) and row["strict_prompt"] <= row["loose_prompt"]
        if row["dataset"] != "base":
            assert row["vs_base_low"] <= row["vs_base"] <= row["vs_base_high"]
    (between,) = following["pairs"]
    assert between["low"] <= between["b_minus_a"] <= between["high"]
    assert "ifbench: instruction following, 2 prompts" in (out / "compare.md").read_text()
    # And HumanEval's first two problems, run in the sandbox: pass@1 per model, averaged over seeds.
    code = table["benchmarks"]["humaneval"]
    assert code["kind"] == "code" and code["problems"] == 2 and [r["dataset"] for r in code["rows"]] == names
    for row in code["rows"]:
        assert row["pass_at_1"] in (0.0, 0.25, 0.5, 0.75, 1.0)
        if row["dataset"] != "base":
            assert row["vs_base_low"] <= row["vs_base"] <= row["vs_base_high"]
    (between,) = code["pairs"]
    assert between["low"] <= between["b_minus_a"] <= between["high"]
    assert "humaneval: pass@1 (greedy) on 2 problems" in (out / "compare.md").read_text()
