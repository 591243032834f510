"""A trained folder is a plain model the vLLM engine serves. The engine is loaded in a subprocess:
the test session may already hold the shared engine (`vllm_engine`), and a second vLLM engine on
the CPU in the same process would double the memory held for its KV cache."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.engine

_SCRIPT = """
import json, sys
from synth.engines import ChatRequest, close_engines, get_engine
from synth.schemas import Message, Sampling, VLLMEngineConfig

engine = get_engine(VLLMEngineConfig(model=sys.argv[1], cpu_kvcache_gib=1, max_model_len=512))
request = ChatRequest(
    messages=[Message(role="user", content="What is two plus two?")],
    sampling=Sampling(temperature=0.0, max_tokens=16),
)
[reply] = engine.chat([request])
print("REPLY " + json.dumps({"text": reply.text, "model": engine.model_name, "tokens": reply.completion_tokens}))
close_engines()
"""


def test_the_vllm_engine_loads_the_trained_folder_and_replies(forward_model):
    folder, _ = forward_model
    run = subprocess.run([sys.executable, "-c", _SCRIPT, str(folder)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    [line] = [line for line in run.stdout.splitlines() if line.startswith("REPLY ")]
    reply = json.loads(line.removeprefix("REPLY "))
    assert reply["text"].strip() and reply["tokens"] > 0
    assert reply["model"] == str(folder)
