"""Training runs of a few steps on the embedded model: a loadable merged folder with its report, the
cache that skips retraining, replacing a stale folder, and the tokens TRL would have made."""

from __future__ import annotations

import json
import math

import pytest

from synth.training import TrainingConfig, TrainingSetupError, data_hash, load_examples, read_report, train
from tests.training.conftest import PAIRS, TINY


@pytest.mark.engine  # loads the embedded model's weights
def test_a_trained_folder_holds_a_merged_model_and_its_report(forward_model, pairs_file):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, lines = forward_model
    report = read_report(folder)
    assert report is not None
    assert report.base == "SmolLM2-135M-Instruct" and report.direction == "forward"
    assert report.data.hash == data_hash(load_examples(pairs_file).items)
    assert (report.data.examples, report.data.train_examples, report.data.eval_examples) == (6, 4, 2)
    assert report.steps == 3 and report.hyperparameters["max_steps"] == 3
    for loss in (report.train_loss, report.final_train_loss, report.eval_loss):
        assert loss is not None and math.isfinite(loss) and loss > 0
    assert report.tokens > 0 and report.tokens_per_second > 0 and report.seconds > 0
    assert report.device == "cpu" and report.save_dtype == "float32"
    assert not (folder / "adapter_config.json").exists()  # merged, not an adapter
    assert {p.name for p in folder.parent.iterdir() if p.name.endswith(".tmp")} == set()
    assert any(line.startswith("step 3/3: loss") for line in lines)

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is two plus two?"}], add_generation_prompt=True, return_tensors="pt",
        return_dict=True,
    )  # fmt: skip
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > prompt["input_ids"].shape[1]


@pytest.mark.engine  # loads the embedded model's weights
def test_the_same_run_again_is_not_retrained(forward_model, pairs_file):
    folder, _ = forward_model
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    lines: list[str] = []
    config = TrainingConfig(
        out=folder, eval_share=0.34, **{**TINY, "log_every": 5}
    )  # how often it reports: not a setting of the model
    assert train(config, pairs_file, progress=lines.append) == folder
    assert lines == [f"{folder}: up to date (same base, data and settings); not trained again"]
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before


@pytest.mark.engine  # loads the embedded model's weights
def test_a_changed_run_replaces_the_folder_backward(tmp_path, pairs_file):
    """Training the backward direction into a folder holding a forward model replaces it whole."""
    out = tmp_path / "model"
    train(TrainingConfig(out=out, **{**TINY, "max_steps": 1}), PAIRS)
    forward = read_report(out)
    train(TrainingConfig(out=out, direction="backward", **TINY), pairs_file)
    report = read_report(out)
    assert forward is not None and report is not None
    assert report.direction == "backward" and report.key != forward.key
    assert report.data.hash == forward.data.hash  # the same examples, read from memory and from the file
    assert math.isfinite(report.final_train_loss) and report.steps == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [".model.lock", "model"]


def test_a_folder_that_is_not_a_model_is_never_overwritten(tmp_path, pairs_file):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    with pytest.raises(TrainingSetupError, match="not a model this command wrote"):
        train(TrainingConfig(out=out, **TINY), pairs_file)
    assert (out / "notes.txt").read_text() == "keep"
    with pytest.raises(TrainingSetupError, match="no such folder"):
        train(TrainingConfig(out=tmp_path / "m", base=str(tmp_path / "nowhere"), **TINY), pairs_file)


@pytest.mark.engine  # loads the embedded model's weights
def test_our_tokens_are_the_ones_trl_makes_for_prompt_completion_data(forward_model):
    """Training feeds pre-tokenized examples to TRL so that scoring can use the same tokens: they
    must be what TRL's own prompt-completion preparation makes (completion-only labels)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from synth.training import Example, to_chat
    from synth.training.model import encode, load_model, load_tokenizer, resolve_base

    base = resolve_base(None)
    tokenizer = load_tokenizer(base.path)
    examples = [Example(p["instruction"], p["output"], p.get("input", "")) for p in PAIRS[:3]]
    examples.append(Example("Say hello.", "Hello!", system="Answer in one word."))
    chats = [to_chat(e, direction) for e in examples for direction in ("forward", "backward")]
    trainer = SFTTrainer(
        model=load_model(base.path, "cpu", __import__("torch").float32),
        args=SFTConfig(
            output_dir=str(forward_model[0].parent / "trl"), max_length=128, bf16=False, use_cpu=True, report_to="none"
        ),
        train_dataset=Dataset.from_list([{"prompt": p, "completion": c} for p, c in chats]),
        processing_class=tokenizer,
    )
    for row, (prompt, completion) in zip(trainer.train_dataset, chats, strict=True):
        ours = encode(tokenizer, prompt, completion, 128)
        assert ours is not None
        assert (ours.input_ids, ours.labels) == (row["input_ids"], row["labels"]), json.dumps(prompt)


@pytest.mark.engine  # loads the embedded model's weights
def test_a_killed_run_leaves_no_model_folder_and_the_next_run_clears_its_leftovers(tmp_path, pairs_file):
    import signal
    import subprocess
    import sys

    out = tmp_path / "model"
    code = (
        "import sys; from synth.training import TrainingConfig, train; "
        "train(TrainingConfig(out=sys.argv[1], max_steps=500, batch_size=2, max_length=128, log_every=1, threads=1), "
        "sys.argv[2], progress=lambda line: print(line, flush=True))"
    )
    run = subprocess.Popen([sys.executable, "-c", code, str(out), str(pairs_file)], stdout=subprocess.PIPE, text=True)
    try:
        assert run.stdout is not None
        assert any(line.startswith("step 1/500") for line in run.stdout)
    finally:
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=30)
    assert not out.exists()
    [leftover] = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert leftover.name.startswith(".model.training-")
    train(TrainingConfig(out=out, **{**TINY, "max_steps": 1}), pairs_file)
    assert read_report(out) is not None and not leftover.exists()
