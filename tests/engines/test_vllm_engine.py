"""The in-process vLLM engine on the embedded model (loads the model once for the session)."""

from __future__ import annotations

import json

import pytest

from synth.engines import ChatRequest
from synth.schemas import Message, Sampling

pytestmark = pytest.mark.engine


def ask(text: str, **fields) -> ChatRequest:
    return ChatRequest(messages=[Message(role="user", content=text)], **fields)


def test_batch_returns_one_completion_per_request_in_order_with_token_counts(vllm_engine):
    requests = [ask(f"Count from 1 to {n}.", sampling=Sampling(temperature=0.0, max_tokens=24)) for n in (3, 5, 7)]
    completions = vllm_engine.chat(requests)
    assert len(completions) == 3
    for c in completions:
        assert c.text.strip() and c.prompt_tokens > 0 and 0 < c.completion_tokens <= 24
    assert vllm_engine.model_name == "SmolLM2-135M-Instruct"


def test_the_engine_runs_in_the_dtype_chosen_for_this_cpu(vllm_engine):
    """`dtype: auto` on a CPU: float32 where the CPU has no bfloat16 instructions, else the
    model's own (bfloat16 for the embedded model)."""
    from synth.engines.vllm_local import cpu_dtype

    chosen = cpu_dtype("auto")
    expected = "bfloat16" if chosen == "auto" else chosen
    assert str(vllm_engine.llm.model_config.dtype) == f"torch.{expected}"


def test_token_limit_is_reported_as_length(vllm_engine):
    [c] = vllm_engine.chat(
        [ask("Write a long story about a dragon.", sampling=Sampling(temperature=0.0, max_tokens=5))]
    )
    assert c.finish_reason == "length" and c.completion_tokens == 5


def test_structured_output_follows_the_json_schema(vllm_engine):
    schema = {
        "type": "object",
        "properties": {
            "score": {"type": "integer", "minimum": 1, "maximum": 5},
            "verdict": {"type": "string", "enum": ["keep", "drop"]},
        },
        "required": ["score", "verdict"],
    }
    [c] = vllm_engine.chat(
        [
            ask(
                "Rate this answer: 'Paris is the capital of France.'",
                json_schema=schema,
                sampling=Sampling(temperature=0.0, max_tokens=40),
            )
        ]
    )
    data = json.loads(c.text)
    assert 1 <= data["score"] <= 5 and data["verdict"] in ("keep", "drop")


def test_prefill_is_continued_and_mixed_batches_keep_their_order(vllm_engine):
    """Each reply of a mixed batch is its own request's (the prompts' token counts differ, so a
    reply in the wrong place shows). Greedy text is not compared across batches: vLLM on a CPU is
    not batch-invariant (one prompt sent twice in one batch has come back as "Hello! I'm here to
    help with" and "Hello there! I'm here to help")."""
    plain = ask("Say hello.", sampling=Sampling(temperature=0.0, max_tokens=8))
    prefilled = ask("List fruits.", prefill="1. Apple\n2.", sampling=Sampling(temperature=0.0, max_tokens=8))
    [plain_alone], [alone] = vllm_engine.chat([plain]), vllm_engine.chat([prefilled])
    assert plain_alone.prompt_tokens != alone.prompt_tokens
    mixed = vllm_engine.chat([plain, prefilled, plain])
    assert [c.prompt_tokens for c in mixed] == [
        plain_alone.prompt_tokens,
        alone.prompt_tokens,
        plain_alone.prompt_tokens,
    ]
    assert all(c.text.strip() and c.finish_reason != "error" for c in mixed)
    for reply in (alone, mixed[1]):  # the reply goes on from the prefill, it does not repeat it
        assert not reply.text.startswith("1. Apple")


def test_a_prompt_longer_than_the_context_fails_alone_and_the_rest_of_the_batch_is_served(vllm_engine):
    too_long = "word " * (vllm_engine.config.max_model_len + 50)
    short = Sampling(temperature=0.0, max_tokens=8)
    requests = [ask("Say hello.", sampling=short), ask(too_long, sampling=short)]
    requests += [ask("Say goodbye to everyone in the room.", sampling=short), ChatRequest(raw=too_long, sampling=short)]
    first, refused, last, refused_raw = vllm_engine.chat(requests)
    for c in (refused, refused_raw):
        assert c.finish_reason == "error" and "refused by vLLM" in (c.error or "") and "context" in (c.error or "")
    assert first.text.strip() and last.text.strip() and first.finish_reason != "error" != last.finish_reason
    # The served replies are the right requests': the same prompts alone have the same token counts.
    alone = vllm_engine.chat([requests[0], requests[2]])
    assert [c.prompt_tokens for c in alone] == [first.prompt_tokens, last.prompt_tokens]
    assert first.prompt_tokens != last.prompt_tokens


def test_same_seed_gives_the_same_sample(vllm_engine):
    request = ask("Invent a name for a cat.", sampling=Sampling(temperature=1.0, max_tokens=12, seed=1234))
    first, second = vllm_engine.chat([request, request])
    assert first.text == second.text


def test_seeded_batch_larger_than_one_prefill_step_runs(vllm_engine):
    """vLLM's CPU build crashed on seeded requests whose prompts were prefilled in chunks."""
    filler = " ".join(f"item{i}" for i in range(300))
    requests = [
        ask(f"{filler} Request {i}: name a fruit.", sampling=Sampling(temperature=0.7, max_tokens=4, seed=i))
        for i in range(24)
    ]
    completions = vllm_engine.chat(requests)
    assert len(completions) == 24
    assert sum(c.prompt_tokens for c in completions) > 8192  # more than vLLM's per-step budget
    assert all(c.finish_reason in ("stop", "length") for c in completions)


def test_a_killed_run_leaves_no_model_process_behind():
    """SIGKILL of a process holding the engine must free the model: nothing of vLLM's may outlive it
    (a resumed run would load the model again beside a leftover copy)."""
    import subprocess
    import sys
    import time

    import psutil

    code = (
        "from synth.engines import get_engine; from synth.schemas import VLLMEngineConfig; "
        "get_engine(VLLMEngineConfig()); print('ready', flush=True); import time; time.sleep(600)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert any(line.strip() == "ready" for line in proc.stdout)  # vLLM logs to stdout too
        descendants = psutil.Process(proc.pid).children(recursive=True)
    finally:
        proc.kill()
        proc.wait(timeout=30)

    def alive() -> list[psutil.Process]:
        out = []
        for p in descendants:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    out.append(p)
            except psutil.NoSuchProcess:
                pass
        return out

    deadline = time.monotonic() + 20
    while alive() and time.monotonic() < deadline:
        time.sleep(0.5)
    leftovers = alive()
    for p in leftovers:
        p.kill()
    assert [p.name() for p in leftovers] == []


def test_a_real_engine_closed_twice_frees_its_processes_refuses_work_and_lets_python_exit():
    """The real shutdown of an engine whose core runs in a process of its own (the default): a
    process loads the engine, answers once, closes it twice; the engine refuses work, vLLM's
    processes are gone and the process exits at once (nothing to join)."""
    import subprocess
    import sys
    import time

    import psutil

    code = """
from synth.engines import ChatRequest, EngineError, get_engine
from synth.schemas import Message, Sampling, VLLMEngineConfig
import psutil
engine = get_engine(VLLMEngineConfig())
ask = [ChatRequest(messages=[Message(role="user", content="hi")], sampling=Sampling(max_tokens=4))]
assert engine.chat(ask)[0].text
children = psutil.Process().children(recursive=True)
assert children
engine.close()
engine.close()
try:
    engine.chat(ask)
    raise SystemExit("a closed engine answered")
except EngineError as e:
    assert "was closed" in str(e)
print("closed", *[p.pid for p in children], flush=True)
"""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = next((line for line in proc.stdout if line.startswith("closed")), "")
        assert line, "the engine did not close"
        closed_at = time.monotonic()
        assert proc.wait(timeout=30) == 0
        assert time.monotonic() - closed_at < 15
    finally:
        proc.kill()
        proc.wait(timeout=30)

    def alive() -> list[str]:
        out = []
        for pid in map(int, line.split()[1:]):
            try:
                process = psutil.Process(pid)
                if process.status() != psutil.STATUS_ZOMBIE:
                    out.append(f"{pid} {process.cmdline()[:3]}")
            except psutil.NoSuchProcess:
                pass
        return out

    # multiprocessing's resource tracker cleans up after its parent exits: give it a moment.
    deadline = time.monotonic() + 20
    while alive() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert alive() == []
