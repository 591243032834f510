"""Scripted replies that Ray workers build for themselves (`ScriptedEngineConfig.responder`).

Ray workers are separate processes: they cannot share the test's script object, so replies depend
only on the request. Self-Instruct tasks take their words from the request's seed, which differs
per batch and prompt, so batches on different workers write different tasks.
"""

from __future__ import annotations

import time

from synth.engines import ChatRequest, Completion
from tests.conftest import SelfInstructScript
from tests.flows import code_script, toy_generator
from tests.flows.test_backtranslation_flow import scores_by_topic
from tests.generators.test_backtranslation import Script
from tests.generators.test_evol_instruct import EvolScript


class _SeededSelfInstruct(SelfInstructScript):
    def __call__(self, request: ChatRequest) -> str:
        if request.tag == "self_instruct_tasks":
            self.counter = 1000 * ((request.sampling.seed if request.sampling else 0) or 0) % 10**9
        return super().__call__(request)


def pipeline():
    """Self-Instruct, Evol-Instruct, backtranslation and toy-question replies, routed on the request's template.
    Backtranslation grades keep two topics of the test corpus in its first round, so its second
    round has segments left to try."""
    self_instruct, evol = _SeededSelfInstruct(), EvolScript()
    backtranslation = Script(scores_by_topic({"rain", "snow"}))

    def reply(request: ChatRequest) -> str | Completion:
        if request.tag.startswith("evol_"):
            return evol(request)
        if request.tag.startswith("backtranslation_"):
            return backtranslation(request)
        if request.tag == toy_generator.GENERATOR:
            return toy_generator.reply(request)
        if request.tag.startswith("code_"):
            return code_script.reply(request)
        return self_instruct(request)

    return reply


def slow_pipeline():
    """`pipeline`'s replies, each after 20 ms: a Self-Instruct run of a few hundred records then
    takes tens of seconds whatever the machine, so another command can meet it still running."""
    reply = pipeline()

    def slow(request: ChatRequest) -> str | Completion:
        time.sleep(0.02)
        return reply(request)

    return slow
