"""Scripted judges for the calibration tests: one that sees the planted defects (it knows each
prompt's label), one that scores at random. Both answer in the judge's structured form."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence

from synth.engines import ChatRequest
from synth.evaluation.calibration import Labelled, built_in_set
from synth.filters.judge import JudgeFilter
from synth.schemas.curation import JudgeConfig


def _reply(score: int) -> str:
    return json.dumps({"rationale": "scripted", "score": score})


def seeing(items: Sequence[Labelled] | None = None):
    """Scores 5 a good response and 1-2 a bad one (the built-in set's labels by default)."""
    prompts = JudgeFilter(JudgeConfig(), engine=None)  # type: ignore[arg-type]  # renders prompts only
    label = {prompts.request(i.record()).messages[-1].content: i.label for i in items or built_in_set()}

    def reply(request: ChatRequest) -> str:
        good = label[request.messages[-1].content]
        return _reply(5 if good else 1 + len(request.messages[-1].content) % 2)

    return reply


def at_random(seed: int = 0):
    rng = random.Random(seed)
    return lambda request: _reply(rng.randint(1, 5))


def seeing_builtin():
    """`ScriptedEngineConfig.responder` form: a callable that makes the responder."""
    return seeing()
