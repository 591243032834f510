"""Proxy evaluation: the base's and the tuned model's loss on reference pairs, written beside the
manifest, not recomputed when nothing changed."""

from __future__ import annotations

import json
import math

import pytest

from synth.training import EvaluationConfig, TrainingDataError, evaluate_dataset
from synth.training.evaluate import EVALUATION, read_evaluation

SMALL = EvaluationConfig(max_steps=2, batch_size=2, max_length=128, threads=1)


@pytest.mark.engine  # loads the embedded model's weights
def test_evaluation_scores_base_and_tuned_model_and_writes_beside_the_manifest(small_dataset, reference_file, tmp_path):
    manifest = (small_dataset / "manifest.json").read_bytes()
    lines: list[str] = []
    result = evaluate_dataset(small_dataset, reference_file, SMALL, progress=lines.append)
    assert result.reference_pairs == 3 and result.reference_tokens > 0 and result.overlap == 0
    for score in (result.base, result.tuned):
        assert math.isfinite(score.loss) and score.loss > 0
        assert score.perplexity == pytest.approx(math.exp(score.loss), rel=1e-3)
    assert result.base.model == "SmolLM2-135M-Instruct"
    assert result.tuned.loss != result.base.loss  # two steps of training changed the model
    assert result.improvement == pytest.approx(result.base.loss - result.tuned.loss, abs=1e-5)
    assert result.train_steps == 2 and result.examples > 0
    stored = json.loads((small_dataset / EVALUATION).read_text())
    assert stored["tuned"]["loss"] == result.tuned.loss and stored["key"] == result.key
    assert (small_dataset / "manifest.json").read_bytes() == manifest  # the manifest is not touched
    assert not [p for p in small_dataset.iterdir() if p.name.endswith(".tmp")]
    card = (small_dataset / "README.md").read_text()  # the dataset card shows both losses
    assert "## Proxy evaluation" in card
    assert f"| base | {result.base.loss:.4f} |" in card and f"| tuned on this data | {result.tuned.loss:.4f} |" in card

    # Nothing changed: the stored result is returned at once.
    again: list[str] = []
    assert evaluate_dataset(small_dataset, reference_file, SMALL, progress=again.append) == result
    assert again == [
        f"{small_dataset / EVALUATION}: up to date (same base, data, reference and budget); not evaluated again"
    ]
    assert read_evaluation(small_dataset) == result

    # A reference prompt that is also a record's instruction: that record is not trained on.
    from synth.shards import scan

    asked = scan(small_dataset).select("instruction", "output").collect().row(0)
    overlapping = tmp_path / "overlapping.jsonl"
    overlapping.write_text(
        reference_file.read_text() + json.dumps({"instruction": asked[0], "output": asked[1]}) + "\n"
    )
    held = evaluate_dataset(small_dataset, overlapping, SMALL, force=True)
    assert held.overlap == 1 and held.examples == result.examples - 1 and held.reference_pairs == 4


def test_reference_problems_name_the_file(small_dataset, tmp_path):
    bad = tmp_path / "ref.jsonl"
    bad.write_text('{"instruction": "A", "output": "B"}\n{"output": "C"}\n')
    with pytest.raises(TrainingDataError, match=r"ref.jsonl:2: field 'instruction' is missing"):
        evaluate_dataset(small_dataset, bad, SMALL)
    with pytest.raises(TrainingDataError, match="not a dataset directory"):
        evaluate_dataset(tmp_path, bad, SMALL)
    assert not (small_dataset / EVALUATION).exists()


def test_a_humpback_dataset_is_evaluated_with_its_seed_tag_and_others_with_no_system(tmp_path, small_dataset):
    from synth.schemas import Message, Record, RunInfo
    from synth.schemas.self_train import SEED_SYSTEM
    from synth.shards import DatasetWriter
    from synth.training.evaluate import inference_system

    assert inference_system(small_dataset) == ""  # no source tags: the reference pairs as given
    path = tmp_path / "humpback"
    seed = Record(
        generator="backtranslation", instruction="Name a colour.", output="Blue.", tags=["seed-data"],
        messages=[Message(role="system", content=SEED_SYSTEM), Message(role="user", content="Name a colour."),
                  Message(role="assistant", content="Blue.")],
    )  # fmt: skip
    with DatasetWriter(path) as writer:
        writer.start_run(RunInfo(run_id="s", generator="backtranslation", config={}, engine={}, model="m"))
        writer.commit_batch("s", 0, [seed], [])
        writer.finish_run("s")
    assert inference_system(path) == SEED_SYSTEM
