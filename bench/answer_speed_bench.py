"""How fast an evaluation makes benchmark answers, as a ratio of raw vLLM on the same prompts.

- **Prompts:** the first `--prompts` IFBench prompts that can be scored here, each rendered in the
  embedded model's chat template as the evaluation renders them.
- **Our path:** `synth.training.ifbench.instruction_following` with a `VLLMAnswers` backend (the
  one `synth evaluate` uses): prompts in chunks, each chunk's answers kept in an answer log as it
  is made, then scored by the benchmark's checkers. The checkers' time is included.
- **Baseline:** one `vllm.LLM.generate` call on the same rendered prompts with the same greedy
  `SamplingParams`, on the same loaded engine.
- **Order:** one untimed warm-up call, then `--rounds` rounds, each timing both paths, the order
  alternating from round to round.
- **Result:** the median output tokens/s of each path and the ratio ours/raw (goal >= 0.9). Also, as
  a second line, the old path (transformers' `generate`, batches of 8) on `--transformers-prompts`
  of the prompts, as a ratio of raw vLLM on those same prompts.

Nothing is asserted. Run: `.venv/bin/python bench/answer_speed_bench.py` (`--help` for sizes).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

GOAL = 0.9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--transformers-prompts", type=int, default=8, help="0 skips the transformers line")
    args = parser.parse_args()

    from vllm import SamplingParams

    from synth.engines import close_engines, get_engine
    from synth.schemas import VLLMEngineConfig
    from synth.training.answering import Answerer, TransformersAnswers, VLLMAnswers
    from synth.training.answers import AnswerLog
    from synth.training.humaneval import render
    from synth.training.ifbench import instruction_following, read_prompts, scorable
    from synth.training.model import load_model, load_tokenizer, resolve_base

    base = resolve_base(None)
    tokenizer = load_tokenizer(base.path)
    prompts = scorable(read_prompts("ifbench"))[0][: args.prompts]
    rendered = render(tokenizer, [p.prompt for p in prompts], chat=True, ask="{prompt}")
    engine = get_engine(VLLMEngineConfig(max_model_len=4096, in_process=True))  # as evaluate loads it
    llm = engine.llm  # type: ignore[attr-defined]
    greedy = SamplingParams(temperature=0.0, top_p=1.0, max_tokens=args.max_tokens)

    def raw(texts: list[str]) -> tuple[float, int]:
        started = time.perf_counter()
        outputs = llm.generate(texts, sampling_params=greedy, use_tqdm=False)
        return time.perf_counter() - started, sum(len(o.outputs[0].token_ids) for o in outputs)

    # Ours is counted by tokenizing the answers it returned (the same count as vLLM's token ids,
    # give or take a token where a reply ends mid-character).
    made: list[str] = []

    class Recording(VLLMAnswers):
        def __call__(self, texts, max_new_tokens, stops=(), on_batch=None):  # type: ignore[no-untyped-def]
            out = super().__call__(texts, max_new_tokens, stops, on_batch)
            made.extend(out)
            return out

    def ours_counted() -> tuple[float, int]:
        made.clear()
        with tempfile.TemporaryDirectory() as scratch:
            started = time.perf_counter()
            model = Answerer("base", Recording(engine), tokenizer, limit=args.prompts, max_new_tokens=args.max_tokens)
            instruction_following(model, "ifbench", log=AnswerLog(Path(scratch) / "answers.jsonl"))
            seconds = time.perf_counter() - started
        return seconds, sum(len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in made)

    raw(rendered[:4])  # warm-up
    speeds: dict[str, list[float]] = {"ours": [], "raw": []}
    for round_ in range(args.rounds):
        order = ("ours", "raw") if round_ % 2 == 0 else ("raw", "ours")
        for path in order:
            seconds, tokens = ours_counted() if path == "ours" else raw(rendered)
            speeds[path].append(tokens / seconds)
            print(f"round {round_ + 1} {path}: {tokens} tokens in {seconds:.1f} s", flush=True)
    mine, theirs = statistics.median(speeds["ours"]), statistics.median(speeds["raw"])
    print(f"answers: ours {mine:.1f} tok/s, raw vLLM {theirs:.1f} tok/s, ratio {mine / theirs:.2f} (goal >= {GOAL})")

    if args.transformers_prompts:
        import torch

        few = rendered[: args.transformers_prompts]
        model = load_model(base.path, "cpu", torch.float32)
        started = time.perf_counter()
        old = TransformersAnswers(model, tokenizer)(few, args.max_tokens)
        slow = sum(len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in old) / (
            time.perf_counter() - started
        )
        seconds, tokens = raw(few)
        print(
            f"transformers generate: {slow:.1f} tok/s, raw vLLM {tokens / seconds:.1f} tok/s on the same "
            f"{len(few)} prompts, ratio {slow / (tokens / seconds):.2f}"
        )
    close_engines()


if __name__ == "__main__":
    main()
