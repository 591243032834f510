"""In-process vLLM: the model is loaded once per process and each batch is one `LLM.chat` call."""

from __future__ import annotations

import contextlib
import functools
import logging
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synth.engines.base import (
    ChatRequest,
    ChatTemplate,
    Completion,
    ContinuationRequest,
    ContinuationScore,
    EngineError,
    output_to_library_log,
    sampling_params,
)
from synth.engines.children import ended, trees, watch_children
from synth.engines.embedded import resolve_model
from synth.schemas import VLLMEngineConfig

if TYPE_CHECKING:
    from vllm import LLM, SamplingParams

log = logging.getLogger(__name__)


def _refused(error: Exception) -> bool:
    """Whether vLLM refused a call for what one of its requests asks (a prompt longer than the
    model's context), rather than failing as a whole."""
    from vllm.exceptions import VLLMClientError

    message = str(error)
    return isinstance(error, VLLMClientError) or (
        isinstance(error, ValueError) and ("context length" in message or "model length" in message)
    )


def _kind(request: ChatRequest) -> str:
    """How a request is served: a raw prompt, a chat turn, or a chat turn continuing a prefill."""
    return "raw" if request.raw is not None else "prefilled" if request.prefill is not None else "chat"


def served_apart(indices: list[int], serve: Callable[[list[int]], list[Completion]]) -> dict[int, Completion]:
    """`serve(indices)`'s completions by index. vLLM refuses a whole call when one request cannot be
    served (its prompt longer than the model's context), so a refused call is split in halves until
    each refused request stands alone, and it alone comes back as an error; the others are served
    in as few calls as that allows."""
    try:
        return dict(zip(indices, serve(indices), strict=True))
    except Exception as e:
        if not _refused(e):
            raise
        if len(indices) == 1:
            return {indices[0]: Completion(text="", finish_reason="error", error=f"refused by vLLM: {e}")}
        half = len(indices) // 2
        return served_apart(indices[:half], serve) | served_apart(indices[half:], serve)


def has_cuda() -> bool:
    """Whether a CUDA device is visible (without importing torch when it is not installed)."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def cpu_dtype(requested: str, cpuinfo: str | None = None) -> str:
    """The dtype a CPU engine runs in for the config's `requested`: "auto" is float32 on a CPU
    whose flags (`cpuinfo`, /proc/cpuinfo's text) show no bfloat16 instructions, which it would
    emulate (the embedded model on AVX2 alone: 37 tokens/s in bfloat16, 89 in float32)."""
    if requested != "auto":
        return requested
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return requested
    flags = {
        flag
        for line in cpuinfo.splitlines()
        if line.split(":", 1)[0].strip().lower() in ("flags", "features")
        for flag in line.split(":", 1)[-1].split()
    }
    if not flags or any(flag.endswith("bf16") for flag in flags):
        return requested
    return "float32"


# The engines whose core runs in this process and is not closed (at most one; see `VLLMEngine`).
_in_process: set[VLLMEngine] = set()

# The KV cache size a user set in the environment before we set one, if any: theirs wins.
_USER_KVCACHE = os.environ.get("VLLM_CPU_KVCACHE_SPACE")


def _prepare_cpu_environment(config: VLLMEngineConfig) -> None:
    # Measured on 2-core machines: reserving no core for the runtime lets vLLM use both, and the
    # KV cache size must be stated or vLLM's CPU build picks a size unrelated to the machine. Each
    # engine states its own (a second engine in the process must not inherit the first's).
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    os.environ["VLLM_CPU_KVCACHE_SPACE"] = _USER_KVCACHE or str(config.cpu_kvcache_gib)


def _tolerant_kernel_scan() -> None:
    """vLLM's CPU build swaps its Triton kernels for C++ ones when the engine core starts, and finds
    every copy of a kernel by reading `vars()` of every value of every module loaded. In its own
    process only vLLM's modules are there; in ours, numba's llvmlite (our novelty and dedup
    kernels) holds an object whose `__dict__` is not a mapping, and the scan raised
    AttributeError. The scan's module gets a `vars` that reads such an object as empty (it holds
    no kernel); everything else it reads as before."""
    from collections.abc import Mapping

    from vllm.triton_utils import dispatcher

    def plain_vars(value: Any) -> Any:
        names = vars(value)
        return names if isinstance(names, Mapping) else {}

    dispatcher.vars = plain_vars  # type: ignore[attr-defined]


@contextlib.contextmanager
def _engine_core_placement(in_process: bool) -> Iterator[None]:
    """vLLM reads where its engine core runs from the environment when the engine is built; an
    engine core built in this process then freezes vLLM's view of the environment, so the freeze is
    lifted first (each engine reads its own settings) and the variable is put back after."""
    import vllm.envs

    if in_process:
        _tolerant_kernel_scan()
    vllm.envs.disable_envs_cache()
    name = "VLLM_ENABLE_V1_MULTIPROCESSING"
    before = os.environ.get(name)
    os.environ[name] = "0" if in_process else "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


class VLLMEngine:
    """Runs a model inside this process with vLLM.

    Every request of a batch goes into a single `LLM.chat` call so vLLM can schedule them together;
    per-request sampling parameters, seeds and JSON schemas are passed alongside.
    """

    def __init__(self, config: VLLMEngineConfig) -> None:
        self.config = config
        self.model_path, self.model_name = resolve_model(config.model)
        on_gpu = has_cuda()
        if not on_gpu:
            _prepare_cpu_environment(config)
        try:
            from vllm import LLM
        except ImportError as e:
            raise EngineError(
                "vLLM is not installed: install the project with the 'cpu' or 'gpu' extra "
                "(see docs/engines.md), or use an 'openai' engine pointed at a server."
            ) from e
        enforce_eager = config.enforce_eager if config.enforce_eager is not None else not on_gpu
        kwargs: dict[str, Any] = dict(
            model=self.model_path,
            dtype=config.dtype if on_gpu else cpu_dtype(config.dtype),
            max_model_len=config.max_model_len,
            tensor_parallel_size=config.tensor_parallel_size,
            enforce_eager=enforce_eager,
            seed=config.seed,
        )
        if on_gpu:
            kwargs["gpu_memory_utilization"] = config.gpu_memory_utilization
        else:
            # vLLM 0.32 rewinds a seeded request's random generator after sampling for a prompt
            # that was only partly prefilled, and torch's CPU generator cannot rewind: a batch
            # whose prompts exceed one step's token budget killed the engine. Without chunked
            # prefill no prompt is split, so seeded batches of any size run.
            kwargs["enable_chunked_prefill"] = False
        log.info("loading %s with vLLM (%s)", self.model_name, "GPU" if on_gpu else "CPU")
        in_process = config.in_process
        if in_process and _in_process:
            # Engine cores in one process share vLLM's parallel state, and closing one tears it down
            # under the others: a second engine while one is open gets a process of its own.
            log.info("an engine already runs in this process: %s gets an engine process", self.model_name)
            in_process = False
        self.in_process = in_process
        before = set(multiprocessing.active_children())
        # its processes' start-up notices go to the log, not the terminal
        with output_to_library_log(), _engine_core_placement(in_process):
            self._llm: LLM | None = LLM(**kwargs)
        if in_process:
            _in_process.add(self)
        self._processes = trees([c for c in multiprocessing.active_children() if c not in before])
        # An engine core in this process dies with it: nothing to watch.
        self._watcher = None if in_process else watch_children()

    def _params(self, request: ChatRequest) -> SamplingParams:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        structured = StructuredOutputsParams(json=request.json_schema) if request.json_schema else None
        return SamplingParams(
            **sampling_params(request, self.config.sampling), stop=request.stop or None, structured_outputs=structured
        )

    def context_length(self) -> int:
        """Tokens the model takes, prompt and reply together (`max_model_len`)."""
        return self.config.max_model_len

    def chat_template(self) -> ChatTemplate:
        """The model's own chat template (its tokenizer's)."""
        return ChatTemplate(self.llm.get_tokenizer())

    def chat(self, requests: Sequence[ChatRequest]) -> list[Completion]:
        """One `LLM.chat` call for the batch (two when it mixes prefilled and plain requests, since
        continuing the assistant's turn is a per-call option in vLLM); raw prompts go to one
        `LLM.generate` call."""
        results: dict[int, Completion] = {}
        for kind in ("raw", "chat", "prefilled"):
            indices = [i for i, r in enumerate(requests) if _kind(r) == kind]
            if indices:
                results |= served_apart(indices, functools.partial(self._serve, requests, kind))
        return [results[i] for i in range(len(requests))]

    def _serve(self, requests: Sequence[ChatRequest], kind: str, part: list[int]) -> list[Completion]:
        chosen = [requests[i] for i in part]
        return self._generate(chosen) if kind == "raw" else self._chat(chosen, prefilled=kind == "prefilled")

    def _generate(self, requests: Sequence[ChatRequest]) -> list[Completion]:
        outputs = self.llm.generate(
            [r.raw or "" for r in requests], sampling_params=[self._params(r) for r in requests], use_tqdm=False
        )
        return self._completions(outputs)

    def _chat(self, requests: Sequence[ChatRequest], prefilled: bool) -> list[Completion]:
        conversations: list[Any] = []
        for request in requests:
            turns = [m.model_dump() for m in request.messages]
            if prefilled:
                turns.append({"role": "assistant", "content": request.prefill})
            conversations.append(turns)
        outputs = self.llm.chat(
            conversations,
            sampling_params=[self._params(r) for r in requests],
            use_tqdm=False,
            add_generation_prompt=not prefilled,
            continue_final_message=prefilled,
        )
        return self._completions(outputs)

    def score_continuations(self, requests: Sequence[ContinuationRequest]) -> list[ContinuationScore]:
        """Each continuation's token log-probabilities after its context, from one `LLM.generate`
        call with `prompt_logprobs=0` and `max_tokens=1` (the one sampled token is discarded).

        Context and continuation are tokenized apart and joined as token ids, so the scored tokens
        are exactly the continuation's. What does not fit `max_model_len` is cut from the
        continuation's end; a context that leaves no room fails that request alone."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        tokenizer = self.llm.get_tokenizer()
        room = self.config.max_model_len - 1  # the one generated token needs a place too
        results: list[ContinuationScore | None] = [None] * len(requests)
        prompts: list[tuple[int, list[int], int]] = []  # request index, token ids, where the continuation starts
        for i, request in enumerate(requests):
            context = tokenizer.encode(request.context, add_special_tokens=False)
            if not context and tokenizer.bos_token_id is not None:
                context = [tokenizer.bos_token_id]
            continuation = tokenizer.encode(request.continuation, add_special_tokens=False)
            if request.max_tokens is not None:
                continuation = continuation[: request.max_tokens]
            continuation = continuation[: max(0, room - len(context))]
            if not context or not continuation:
                what = "no context token" if not context else "no continuation token fits max_model_len"
                results[i] = ContinuationScore(error=what, prompt_tokens=len(context))
                continue
            prompts.append((i, context + continuation, len(context)))
        if prompts:
            params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
            outputs = self.llm.generate(
                [TokensPrompt(prompt_token_ids=ids) for _, ids, _ in prompts], sampling_params=params, use_tqdm=False
            )
            for (i, ids, start), out in zip(prompts, outputs, strict=True):
                positions = out.prompt_logprobs or []
                try:
                    logprobs = [float(positions[k][ids[k]].logprob) for k in range(start, len(ids))]  # type: ignore[index]
                except (IndexError, KeyError, TypeError) as e:
                    results[i] = ContinuationScore(error=f"no prompt log-probability: {e!r}", prompt_tokens=len(ids))
                    continue
                results[i] = ContinuationScore(logprobs=logprobs, prompt_tokens=len(ids))
        return [r if r is not None else ContinuationScore(error="not scored") for r in results]

    @staticmethod
    def _completions(outputs: Sequence[Any]) -> list[Completion]:
        completions = []
        for out in outputs:
            best = out.outputs[0]
            reason = best.finish_reason if best.finish_reason in ("stop", "length") else "stop"
            completions.append(
                Completion(
                    text=best.text,
                    finish_reason=reason,
                    prompt_tokens=len(out.prompt_token_ids or []),
                    completion_tokens=len(best.token_ids),
                )
            )
        return completions

    @property
    def llm(self) -> LLM:
        if self._llm is None:
            raise EngineError(f"the vLLM engine for {self.model_name} was closed; get_engine() builds a new one")
        return self._llm

    def close(self) -> None:
        """Stop vLLM's engine processes now (otherwise Python's exit waits on them, and they wait
        for work: a finished command would never return); a second call does nothing.
        `synth.engines.close_bounded` gives this a time limit, then calls `kill`."""
        if self._llm is None:
            return
        if self._watcher is not None:
            self._watcher.kill()
            self._watcher.wait()
        core = getattr(getattr(self._llm, "llm_engine", None), "engine_core", None)
        try:
            if core is not None:
                core.shutdown()
            if not ended(self._processes):  # gone when close returns, not soon after
                self.kill()
        finally:
            _in_process.discard(self)
        self._llm = None

    def kill(self) -> None:
        """Kill the processes vLLM started for this engine (each only if it is still the same
        process): for a close that does not finish. The engine cannot serve afterwards."""
        import psutil

        for process in getattr(self, "_processes", []):
            with contextlib.suppress(psutil.Error):
                process.kill()  # psutil refuses a pid that now names another process
        self._llm = None
