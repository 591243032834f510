"""`synth train` and `synth evaluate` on the command line: through their Prefect flows, the cache
without a flow, and bad input as one line with exit code 2."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from synth.cli import app
from synth.training import read_report
from synth.training.evaluate import EVALUATION

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.mark.engine  # loads the embedded model's weights
@pytest.mark.usefixtures("prefect_harness")
def test_train_runs_the_flow_then_finds_the_folder_up_to_date(tmp_path, pairs_file):
    out = tmp_path / "backward"
    args = ["train", str(pairs_file), "--out", str(out), "--direction", "backward", "--max-steps", "2",
            "--batch-size", "2", "--max-length", "128", "--eval-share", "0.3", "--threads", "1"]  # fmt: skip
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    report = read_report(out)
    assert report is not None and report.direction == "backward" and report.steps == 2
    assert report.eval_loss is not None and report.data.eval_examples == 2
    assert "Training" in result.output and "tokens/s" in result.output
    again = invoke(*args)
    assert again.exit_code == 0
    assert f"{out}: up to date" in " ".join(again.output.split())
    assert read_report(out) == report


@pytest.mark.engine  # loads the embedded model's weights
@pytest.mark.usefixtures("prefect_harness")
def test_evaluate_prints_both_losses_and_repeats_the_numbers(tmp_path, small_dataset, reference_file):
    """Run twice on copies of one dataset (the second with --force): the same seed gives the same losses."""
    copy = tmp_path / "copy"
    shutil.copytree(small_dataset, copy)
    # The default budget: one epoch over the records, a step per --batch-size of them.
    args = ["--reference", str(reference_file), "--batch-size", "8", "--max-length", "128", "--threads", "1"]
    first = invoke("evaluate", str(small_dataset), *args)
    assert first.exit_code == 0, first.output
    output = " ".join(first.output.split())
    assert "Proxy loss on 3 reference pairs" in output and "improvement" in output and "evaluation.json" in output
    stored = json.loads((small_dataset / EVALUATION).read_text())
    assert stored["train_steps"] == -(-stored["examples"] // 8) and stored["train_epochs"] == pytest.approx(1.0)
    assert stored["config"]["epochs"] == 1.0 and stored["config"]["max_steps"] is None
    # The copy with two fine-tuning seeds: its first seed is the first run's model, loss for loss.
    second = invoke("evaluate", str(copy), *args, "--force", "--seeds", "2")
    assert second.exit_code == 0, second.output
    a, b = (json.loads((d / EVALUATION).read_text()) for d in (small_dataset, copy))
    assert a["base"]["loss"] == b["base"]["loss"] and b["seed_losses"][0] == a["tuned"]["loss"]
    assert a["tuned"]["loss"] != a["base"]["loss"]
    assert b["seeds"] == 2 and len(b["seed_losses"]) == 2 and b["seed_losses"][0] != b["seed_losses"][1]
    assert b["tuned"]["loss"] == pytest.approx(sum(b["seed_losses"]) / 2, abs=2e-6) and b["seed_spread"] > 0
    assert "the mean of 2 fine-tuning seeds" in " ".join(second.output.split())
    assert "The tuned loss is the mean of 2 fine-tuning seeds" in (copy / "README.md").read_text()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--direction", "sideways"], "--direction 'sideways': choose one of forward, backward"),
        (["--base", "/no/such/model"], "base model /no/such/model: no such folder"),
        (["--lora-targets", ","], "lora_targets"),
    ],
)
def test_bad_options_are_one_line(tmp_path, pairs_file, args, expected):
    result = invoke("train", str(pairs_file), "--out", str(tmp_path / "m"), *args)
    assert result.exit_code == 2
    assert expected in result.output and "Traceback" not in result.output
    assert not (tmp_path / "m").exists()


def test_a_bad_data_line_is_one_line_naming_file_and_line(tmp_path, small_dataset):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "A", "output": "B"}\n{"instruction": "C", "output": \n')
    result = invoke("train", str(bad), "--out", str(tmp_path / "m"))
    assert result.exit_code == 2
    assert f"{bad}:2: invalid JSON" in result.output
    assert not (tmp_path / "m").exists()
    result = invoke("evaluate", str(small_dataset), "--reference", str(bad))
    assert result.exit_code == 2 and f"{bad}:2: invalid JSON" in result.output
    result = invoke("evaluate", str(tmp_path), "--reference", str(bad))
    assert result.exit_code == 2 and "not a dataset directory" in result.output


def test_a_benchmark_that_is_no_name_or_readable_ifeval_file_is_refused_before_anything_loads(tmp_path, small_dataset):
    bad = tmp_path / "prompts.jsonl"
    bad.write_text(
        '{"prompt": "Say hi.", "instruction_id_list": ["count:word_count_range"], "kwargs": [{}]}\n{"prompt": \n'
    )
    reference = tmp_path / "ref.jsonl"
    reference.write_text('{"instruction": "A", "output": "B"}\n')
    for benchmark, says in [
        (str(bad), f"{bad}:2: not JSON"),
        ("mmlu", "'mmlu' is not humaneval, ifbench or a .jsonl file"),
        (str(tmp_path / "gone.jsonl"), "gone.jsonl: no such file"),
    ]:
        result = invoke("evaluate", str(small_dataset), "--reference", str(reference), "--benchmark", benchmark)
        assert result.exit_code == 2 and says in result.output, result.output
        assert "Traceback" not in result.output
    assert not (small_dataset / EVALUATION).exists()
    result = invoke("evaluate", str(small_dataset))
    assert result.exit_code == 2 and "nothing to measure" in result.output
    ifbench = ["--benchmark", "ifbench"]
    for command in (
        ["evaluate", str(small_dataset)],
        ["compare", str(small_dataset), str(reference), "--reference", str(reference)],
    ):
        result = invoke(*command, *ifbench, "--benchmark-engine", "tgi")
        assert result.exit_code == 2 and "--benchmark-engine 'tgi': choose one of vllm, transformers" in result.output
        result = invoke(*command, "--benchmark", "mmlu")
        assert result.exit_code == 2 and "'mmlu' is not humaneval, ifbench or a .jsonl file" in result.output
