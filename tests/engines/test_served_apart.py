"""A vLLM call refused for one request's sake: that request alone fails, the others are served."""

from __future__ import annotations

import pytest
from vllm.exceptions import VLLMValidationError

from synth.engines.base import Completion
from synth.engines.vllm_local import served_apart


def serving(bad: set[int], calls: list[list[int]]):
    def serve(part: list[int]) -> list[Completion]:
        calls.append(part)
        if bad & set(part):
            raise VLLMValidationError("prompt exceeds the maximum context length", parameter="input_tokens")
        return [Completion(text=f"reply {i}") for i in part]

    return serve


def test_each_refused_request_fails_alone_and_the_rest_are_served_in_few_calls():
    calls: list[list[int]] = []
    results = served_apart(list(range(8)), serving({2, 5}, calls))
    assert sorted(results) == list(range(8))
    for i in range(8):
        if i in (2, 5):
            assert results[i].finish_reason == "error" and "maximum context length" in (results[i].error or "")
        else:
            assert results[i].text == f"reply {i}"
    served = [part for part in calls if not {2, 5} & set(part)]
    assert sorted(i for part in served for i in part) == [0, 1, 3, 4, 6, 7] and len(served) <= 4


def test_a_call_that_fails_for_another_reason_is_raised():
    def broken(part: list[int]) -> list[Completion]:
        raise RuntimeError("engine core died")

    with pytest.raises(RuntimeError, match="engine core died"):
        served_apart([0, 1, 2], broken)


def test_a_batch_nobody_refuses_is_one_call():
    calls: list[list[int]] = []
    assert served_apart([3, 4], serving(set(), calls)) == {3: Completion(text="reply 3"), 4: Completion(text="reply 4")}
    assert calls == [[3, 4]]
