"""The judge's calibration on the real engine: the embedded model grades part of the built-in set."""

from __future__ import annotations

import pytest

from synth.flows import api
from synth.schemas import VLLMEngineConfig
from synth.schemas.curation import JudgeConfig

pytestmark = pytest.mark.engine


def test_the_embedded_model_grades_the_built_in_set(vllm_engine):
    from synth.evaluation.calibration import built_in_set

    items = built_in_set()[:8]  # four seed answers, each with its planted defect
    out = api.judge_check(items, JudgeConfig(), VLLMEngineConfig())
    graded = out["responses"] - out["unparseable"]
    assert out["responses"] == 8 and graded > 0
    assert out["by_label"]["good"]["n"] + out["by_label"]["bad"]["n"] == graded
    assert sum(out["by_label"]["bad"]["scores"].values()) == out["by_label"]["bad"]["n"]
    assert sum(g["n"] for g in out["by_defect"].values()) == out["by_label"]["bad"]["n"]
    if out["auc"] is not None:
        assert 0.0 <= out["auc"] <= 1.0
