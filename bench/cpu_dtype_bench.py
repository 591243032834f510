"""Decoding speed of the embedded model on this CPU in float32 against bfloat16, through
`VLLMEngine.chat`: the ratio behind `dtype: auto` choosing float32 on a CPU without bfloat16
instructions (`synth.engines.vllm_local.cpu_dtype`). Each dtype loads in a process of its own (one
in-process engine at a time); the two runs alternate, and the median tokens/s of each is printed
with the ratio float32/bfloat16. Nothing is asserted.

    .venv/bin/python bench/cpu_dtype_bench.py            # 2 rounds, about 3 min on 2 cores
    .venv/bin/python bench/cpu_dtype_bench.py --rounds 3 --chats 16 --tokens 128
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time


def one(dtype: str, chats: int, tokens: int) -> float:
    """Output tokens per second of one timed call (after a warm-up call) in `dtype`."""
    from synth.engines import close_engines, get_engine
    from synth.engines.base import ChatRequest
    from synth.schemas import Message, Sampling, VLLMEngineConfig

    engine = get_engine(VLLMEngineConfig(dtype=dtype, in_process=True))  # type: ignore[arg-type]
    requests = [
        ChatRequest(
            messages=[Message(role="user", content=f"Write a long story about topic number {i}.")],
            sampling=Sampling(temperature=0.7, top_p=0.95, max_tokens=tokens, seed=i),
        )
        for i in range(chats)
    ]
    engine.chat(requests[:2])
    started = time.perf_counter()
    replies = engine.chat(requests)
    elapsed = time.perf_counter() - started
    close_engines()
    return sum(r.completion_tokens for r in replies) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--chats", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.chats, args.tokens)))
        return
    from synth.engines.vllm_local import cpu_dtype

    rates: dict[str, list[float]] = {"float32": [], "bfloat16": []}
    for round_ in range(args.rounds):
        order = ["float32", "bfloat16"] if round_ % 2 == 0 else ["bfloat16", "float32"]
        for dtype in order:
            command = [
                sys.executable,
                __file__,
                "--one",
                dtype,
                "--chats",
                str(args.chats),
                "--tokens",
                str(args.tokens),
            ]
            out = subprocess.run(command, capture_output=True, text=True, check=True)
            rates[dtype].append(json.loads(out.stdout.strip().splitlines()[-1]))
    f32, bf16 = statistics.median(rates["float32"]), statistics.median(rates["bfloat16"])
    print(f"{args.chats} chats x {args.tokens} tokens, {args.rounds} rounds; dtype auto here: {cpu_dtype('auto')}")
    print(f"float32 {f32:.1f} tokens/s, bfloat16 {bf16:.1f} tokens/s, ratio float32/bfloat16 {f32 / bf16:.2f}")


if __name__ == "__main__":
    main()
