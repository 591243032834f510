"""Shared fixtures: an isolated Prefect home, scripted replies for Self-Instruct, the real engine."""

from __future__ import annotations

import atexit
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

# Whether pytest is loading this file (a command a test starts may import it for a responder).
_UNDER_PYTEST = "_pytest" in sys.modules

import pytest  # noqa: E402


def _isolate_prefect() -> None:
    """Keep Prefect away from the user's profile and quiet. Set before Prefect is imported, and only
    when pytest loads this file: a command a test starts may import it for a scripted responder,
    and must keep the Prefect server the test handed it."""
    home = tempfile.mkdtemp(prefix="synth-test-prefect-")
    # At exit, after the handlers of everything imported later (Prefect's among them) have run.
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    os.environ["PREFECT_HOME"] = home
    os.environ["PREFECT_API_URL"] = ""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")


def _share_cores_between_workers() -> None:
    """Under pytest-xdist, give each worker's model code cores of its own: vLLM binds an engine's
    threads to every core by default, so two workers' engines (and the engines of the commands
    they start, which inherit this) would fight over the same cores and spin at each other's
    barriers. Torch's threads follow `OMP_NUM_THREADS`. Python code still runs on any core."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    cpus = sorted(os.sched_getaffinity(0))
    if not worker or count < 2 or len(cpus) < count:
        return
    k = int(worker.removeprefix("gw"))
    mine = cpus[k * len(cpus) // count : (k + 1) * len(cpus) // count]
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", ",".join(map(str, mine)))
    os.environ.setdefault("OMP_NUM_THREADS", str(len(mine)))


if _UNDER_PYTEST:
    _isolate_prefect()
    # pytest-xdist's workers get COLUMNS=80 and LINES=24; the CLI's consoles would keep that
    # width for the whole worker, where a test's `env={"COLUMNS": ...}` is meant to decide it.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ.pop("COLUMNS", None)
        os.environ.pop("LINES", None)
    _share_cores_between_workers()
    # Each test worker holds an engine and the commands tests start load more: a 2 GiB KV cache
    # each (the default is 4; the tests' batches of the embedded model need far less) keeps two
    # workers and their commands within a 24 GiB machine. Set before the engine module reads it.
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")

from synth.engines import ChatRequest  # noqa: E402

_NEXT_TASK = re.compile(r"Task (\d+):$")


class SelfInstructScript:
    """Scripted replies for the three Self-Instruct prompts, continuing each prompt's prefill.

    Task prompts get `per_prompt` new numbered tasks whose words come from a counter, so they are
    novel; every third is a labelling task, which the classification reply calls not open-ended;
    instances answer in the requested format.
    """

    def __init__(self, per_prompt: int = 3) -> None:
        self.per_prompt = per_prompt
        self.counter = 0

    def next_task(self) -> str:
        self.counter += 1
        kind = "label" if self.counter % 3 == 0 else "explain"
        # Distinct vocabulary per task keeps ROUGE-L between tasks low.
        return f"Please {kind} " + " ".join(f"w{self.counter}x{k}" for k in range(6))

    def __call__(self, request: ChatRequest) -> str:
        prompt = request.messages[-1].content
        if request.tag == "self_instruct_tasks":
            first = int(_NEXT_TASK.search(request.prefill).group(1))
            lines = [" " + self.next_task()]
            lines += [f"Task {first + i}: {self.next_task()}" for i in range(1, self.per_prompt)]
            return "\n".join(lines)
        task = prompt.rsplit("Task: ", 1)[1].strip()
        if request.tag == "self_instruct_classify":  # "Is it classification?"
            return " Yes" if task.startswith("Please label") else " No"
        if request.tag == "self_instruct_open_ended":  # "Open-ended:"
            return " no" if task.startswith("Please label") else " yes"
        if request.tag == "self_instruct_instances_output_first":
            return f" positive\nInput: text for {task}"
        field = "" if (request.prefill or "").endswith("Input:") else "Input:"
        return f"{field} input for {task}\nOutput: answer to {task}"


@pytest.fixture
def script() -> SelfInstructScript:
    return SelfInstructScript()


def build_small_dataset(path, batches: int = 2) -> None:
    """A dataset like a real run's, made with the scripted engine (no Prefect, no model): Self-Instruct
    batches, plus a three-step chain of evolved records so lineage views have something to show."""
    from synth.engines import ScriptedEngine
    from synth.generators.seeds import load_seed_tasks
    from synth.generators.self_instruct import SelfInstructGenerator
    from synth.schemas import Record, RunInfo, SelfInstructConfig
    from synth.shards import DatasetWriter

    script = SelfInstructScript()

    def with_rejects(request):
        reply = script(request)
        if request.tag == "self_instruct_tasks":  # one heuristic reject and one near-copy per prompt
            reply += f"\nTask 90: Draw a picture of task {script.counter}\nTask 91: {script.next_task()[:-1]}"
        return reply

    config = SelfInstructConfig(prompts_per_batch=3)
    generator = SelfInstructGenerator(config, ScriptedEngine(with_rejects), load_seed_tasks(), run_id="si")
    with DatasetWriter(path, shard_rows=5) as writer:
        writer.start_run(
            RunInfo(run_id="si", generator="self_instruct", config=config.model_dump(), engine={}, model="scripted")
        )
        for batch in range(batches):
            result = generator.run_batch(batch)
            writer.commit_batch("si", batch, result.kept, result.rejects)
            generator.add_to_pool(result.accepted_tasks)
        writer.finish_run("si")
        root = Record(generator="evol_instruct", instruction="Explain rain.", output="Water falls.", round=0)
        chain = [root]
        for step, op in enumerate(["add_constraint", "deepen"], start=1):
            parent = chain[-1]
            chain.append(
                Record(
                    generator="evol_instruct",
                    instruction=f"{parent.instruction} Step {step}.",
                    output=f"Answer {step}.",
                    parent_id=parent.id,
                    root_id=root.id,
                    operation=op,
                    round=step,
                    judge_score=float(3 + step),
                )
            )
        writer.start_run(RunInfo(run_id="evol", generator="evol_instruct", config={}, engine={}, model="scripted"))
        writer.commit_batch("evol", 0, chain, [])
        writer.finish_run("evol")


@pytest.fixture
def small_dataset(tmp_path):
    path = tmp_path / "small"
    build_small_dataset(path)
    return path


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto` (the default, in pyproject.toml): one worker a core, at most 4. Each worker that
    reaches a real-engine test loads its own engine (a 4 GiB KV cache on a CPU), so memory, not
    cores, bounds the count on a large machine. `-n 0` runs the suite in this process."""
    return max(1, min(os.cpu_count() or 1, 4))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that start commands (their module imports subprocess) share the session's Prefect
    server, as the flows run in this process do: see `prefect_harness`."""
    for item in items:
        module = getattr(item, "module", None)
        if hasattr(module, "subprocess") and "prefect_harness" not in item.fixturenames:
            item.fixturenames.append("prefect_harness")  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect server for the whole session, for the flows run in this process and
    for the commands the tests start (through PREFECT_API_URL): without it each command would
    start a temporary server of its own, about 17 s here."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        os.environ["PREFECT_API_URL"] = PREFECT_API_URL.value()
        try:
            yield
        finally:
            os.environ["PREFECT_API_URL"] = ""


@pytest.fixture(scope="session")
def vllm_engine():
    """The real in-process vLLM engine on the embedded model, loaded once for the session."""
    from synth.engines import close_engines, get_engine
    from synth.schemas import VLLMEngineConfig

    yield get_engine(VLLMEngineConfig())
    close_engines()


def capped(config, max_tokens: int):
    """`config` with each of its sampling settings allowed at most `max_tokens` per reply. On a CPU
    a batch decodes one token per step for as long as its longest reply runs, so the real-engine
    tests whose checks do not depend on long replies cap them: the suite's time is mostly theirs."""
    from synth.schemas import Sampling

    updates = {
        name: value.model_copy(update={"max_tokens": min(value.max_tokens, max_tokens)})
        for name, value in config
        if isinstance(value, Sampling)
    }
    assert updates, f"{type(config).__name__} has no sampling settings to cap"
    return config.model_copy(update=updates)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(port: int, folder, *options: str) -> subprocess.Popen:
    """A private redis-server on loopback `port`, nothing kept on disk unless `options` say so,
    answering when returned. A missing server fails the test: the Redis index is a feature, and
    `make test` installs the server."""
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (`make test` installs it; or apt-get install redis-server)")
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(folder), *options],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    import redis

    client = redis.Redis(port=port)
    for _ in range(200):
        try:
            client.ping()
            return server
        except redis.ConnectionError:
            time.sleep(0.05)
    server.terminate()
    raise RuntimeError(f"redis-server did not start on port {port}")


@pytest.fixture
def redis_url(tmp_path) -> Iterator[str]:
    """A private redis-server on a free loopback port, nothing kept on disk; stopped afterwards."""
    port = free_port()
    server = start_redis(port, tmp_path)
    yield f"redis://127.0.0.1:{port}/0"
    server.terminate()
    server.wait(timeout=10)
