"""The judge's calibration: labelled responses (a file, or the built-in set of seed answers with
planted defects) graded by the judge; AUC, agreement at the threshold, scores per label and defect."""

from __future__ import annotations

import itertools
import json

import pytest
from typer.testing import CliRunner

from synth.engines import ScriptedEngine
from synth.evaluation.calibration import (
    DEFECTS,
    CalibrationInputError,
    Labelled,
    built_in_set,
    grade,
    read_labelled,
    report,
    roc_auc,
)
from synth.filters.judge import JudgeFilter
from synth.generators.seeds import load_seed_tasks
from synth.schemas.curation import JudgeConfig
from tests.evaluation.judges import at_random, seeing


def pairwise_auc(scores, labels) -> float:
    """The definition, pair by pair: P(good > bad) + P(tie) / 2."""
    good = [s for s, y in zip(scores, labels, strict=True) if y]
    bad = [s for s, y in zip(scores, labels, strict=True) if not y]
    wins = sum(1.0 if g > b else 0.5 if g == b else 0.0 for g, b in itertools.product(good, bad))
    return wins / (len(good) * len(bad))


@pytest.mark.parametrize("seed", range(5))
def test_the_auc_is_the_share_of_good_bad_pairs_ordered_right_with_ties_halved(seed):
    import random

    rng = random.Random(seed)
    scores = [rng.randint(1, 5) for _ in range(60)]
    labels = [rng.random() < 0.4 for _ in range(60)]
    assert roc_auc(scores, labels) == pytest.approx(pairwise_auc(scores, labels))
    assert roc_auc([1, 2], [1, 1]) is None


@pytest.mark.parametrize("language", ["en", "zh"])
def test_the_built_in_set_pairs_each_seed_answer_with_a_planted_defect(language):
    items = built_in_set(language)
    tasks = [t for t in load_seed_tasks(None, language) if t.instances]
    good = [i for i in items if i.label == 1]
    bad = [i for i in items if i.label == 0]
    assert [(i.instruction, i.output) for i in good] == [(t.instruction, t.instances[0].output) for t in tasks]
    assert len(bad) == len(good) and {i.defect for i in bad} == set(DEFECTS)
    answer = {i.instruction: i.output for i in good}
    assert all(i.output.strip() and i.output != answer[i.instruction] for i in bad)
    for i in bad:
        if i.defect == "truncated":
            assert answer[i.instruction].startswith(i.output) and len(i.output) < 0.5 * len(answer[i.instruction])
        if i.defect == "repeated_question":
            assert i.output.startswith(i.instruction)
    assert built_in_set(language) == items  # the same set every time


def test_a_judge_that_sees_the_defects_separates_them_and_one_at_random_does_not():
    items = built_in_set()
    sharp = report(items, grade(items, JudgeFilter(JudgeConfig(), ScriptedEngine(seeing(items)))), threshold=4)
    assert sharp["auc"] == 1.0 and sharp["agreement"] == 1.0 and sharp["unparseable"] == 0
    assert sharp["by_label"]["bad"]["dropped"] == sharp["by_label"]["bad"]["n"] == len(items) // 2
    assert set(sharp["by_defect"]) == set(DEFECTS)
    assert all(g["dropped"] == g["n"] > 0 for g in sharp["by_defect"].values())
    coin = [report(items, grade(items, JudgeFilter(JudgeConfig(), ScriptedEngine(at_random(s)))), 4) for s in range(4)]
    assert all(abs(r["auc"] - 0.5) < 0.2 for r in coin), [r["auc"] for r in coin]
    assert 0.35 < sum(r["auc"] for r in coin) / 4 < 0.65


def test_unparseable_replies_are_counted_and_left_out():
    items = [Labelled("q", "", "good answer", 1), Labelled("q", "", "bad", 0), Labelled("q2", "", "fine", 1)]
    replies = iter(['{"rationale": "ok", "score": 5}', "no idea", '{"rationale": "ok", "score": 4}'])
    scores = grade(items, JudgeFilter(JudgeConfig(), ScriptedEngine(lambda r: next(replies))))
    assert scores == [5, None, 4]
    out = report(items, scores, threshold=4)
    assert out["unparseable"] == 1 and out["auc"] is None and out["agreement"] == 1.0


def test_a_labelled_file_is_read_and_a_bad_line_is_named(tmp_path):
    path = tmp_path / "labelled.jsonl"
    rows = [
        {"instruction": "Add 2 and 2.", "output": "4", "label": 1},
        {"instruction": "Add 2 and 2.", "input": "", "output": "5", "label": 0, "defect": "wrong"},
    ]
    path.write_text("\n".join(map(json.dumps, rows)) + "\n\n")
    assert read_labelled(path) == [Labelled("Add 2 and 2.", "", "4", 1), Labelled("Add 2 and 2.", "", "5", 0, "wrong")]
    for bad, message in [
        ({"instruction": "x", "output": "y", "label": 2}, r"labelled\.jsonl:3: field 'label' must be 1 \(good\) or 0"),
        ({"instruction": "x", "output": "y", "label": "maybe"}, r"labelled\.jsonl:3: field 'label'"),
        ({"instruction": "x", "output": "y"}, r"labelled\.jsonl:3: field 'label' must be"),
        ({"instruction": "x", "label": 1}, r"labelled\.jsonl:3: field 'output' is missing"),
    ]:
        path.write_text("\n".join(map(json.dumps, [*rows, bad])) + "\n")
        with pytest.raises(CalibrationInputError, match=message):
            read_labelled(path)
    # The obvious spellings of a label are read as such.
    spelled = [{**rows[0], "label": v} for v in (True, "good", "1", 1.0)]
    spelled += [{**rows[1], "label": v} for v in (False, "bad", 0)]
    path.write_text("\n".join(map(json.dumps, spelled)) + "\n")
    assert [i.label for i in read_labelled(path)] == [1, 1, 1, 1, 0, 0, 0]
    path.write_text(json.dumps(rows[0]) + "\n")
    with pytest.raises(CalibrationInputError, match="give both good"):
        read_labelled(path)


def test_the_command_reports_on_the_built_in_set_and_on_a_file(tmp_path):
    from synth.cli import app

    engine = tmp_path / "engine.json"
    engine.write_text(json.dumps({"kind": "scripted", "responder": "tests.evaluation.judges:seeing_builtin"}))
    out = tmp_path / "report.json"
    result = CliRunner().invoke(app, ["judge-check", "--engine-config", str(engine), "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert (
        "built-in (en): 96 responses, 0 unparseable; ROC AUC 1.000" in text
        and "agreement at threshold 4: 100.0%" in text
    )
    written = json.loads(out.read_text())
    assert written["auc"] == 1.0 and set(written["by_defect"]) == set(DEFECTS)
    assert written["judge_model"] == "scripted" and len(written["judge_rubric"]) == 12

    # Kept with a dataset the judge curates: the card says how the judge did.
    from synth.shards import DatasetWriter

    with DatasetWriter(tmp_path / "ds"):
        pass
    result = CliRunner().invoke(app, ["judge-check", "--engine-config", str(engine), "--dataset", str(tmp_path / "ds")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "ds" / "judge_calibration.json").read_text())["auc"] == 1.0
    card = (tmp_path / "ds" / "README.md").read_text()
    assert "## Judge calibration" in card and "ROC AUC 1.000, agreement 100.0% at threshold 4" in card
    assert "dropped 0 of 48 good and 48 of 48 bad" in card

    labelled = tmp_path / "mine.jsonl"
    labelled.write_text(
        '{"instruction": "Say hi.", "output": "Hi!", "label": 1}\n{"instruction": "Say hi.", "output": "x"}\n'
    )
    result = CliRunner().invoke(app, ["judge-check", str(labelled), "--engine-config", str(engine)])
    assert result.exit_code == 2 and "mine.jsonl:2: field 'label'" in " ".join(result.output.split())
