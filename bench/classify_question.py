"""How well the embedded model tells classification tasks apart, asked the paper's way or inverted.

Self-Instruct asks the model whether each new task is a classification task (its instances are
then generated output-first). The `paper` profile asks "Is it classification?" with a balanced
list of examples; the `small-model` profile asks the inverted question ("Open-ended?") with
examples from the seeds. This script asks both about every built-in seed task (whose answer the
seed file records) and prints each question's accuracy and balanced accuracy, and their ratio.

    .venv/bin/python bench/classify_question.py
"""

from __future__ import annotations

import time

from synth.engines import close_engines, get_engine
from synth.generators.seeds import load_seed_tasks
from synth.generators.self_instruct import SelfInstructGenerator
from synth.generators.self_instruct_replies import parse_is_classification
from synth.schemas import SelfInstructConfig, VLLMEngineConfig


def score(question: str, engine, seeds) -> dict[str, float]:
    profile = "paper" if question == "classification" else "small-model"
    gen = SelfInstructGenerator(SelfInstructConfig(profile=profile), engine, seeds)
    shown = (
        set()
        if question == "classification"
        else {s.instruction for s in seeds if s.instruction in gen._seed_examples_open_ended()}
    )
    asked = [s for s in seeds if s.instruction not in shown]  # never ask about a task shown as an example
    start = time.perf_counter()
    replies = engine.chat([gen.classify_request(s.instruction, 0, i) for i, s in enumerate(asked)])
    verdicts = [parse_is_classification(r.text, question) for r in replies]
    truth = [s.is_classification for s in asked]
    right = [v == t for v, t in zip(verdicts, truth, strict=True)]
    pos = [r for r, t in zip(right, truth, strict=True) if t]
    neg = [r for r, t in zip(right, truth, strict=True) if not t]
    return {
        "asked": len(asked),
        "accuracy": sum(right) / len(right),
        "balanced": (sum(pos) / max(1, len(pos)) + sum(neg) / max(1, len(neg))) / 2,
        "said classification": sum(v is True for v in verdicts) / len(verdicts),
        "unparseable": sum(v is None for v in verdicts) / len(verdicts),
        "seconds": time.perf_counter() - start,
    }


def main() -> None:
    seeds = load_seed_tasks()
    engine = get_engine(VLLMEngineConfig())
    try:
        results = {q: score(q, engine, seeds) for q in ("classification", "open-ended")}
    finally:
        close_engines()
    truth = sum(s.is_classification for s in seeds) / len(seeds)
    print(f"{len(seeds)} seed tasks, {truth:.0%} of them classification tasks")
    for question, r in results.items():
        print(
            f"{question:>15}: asked {r['asked']}, accuracy {r['accuracy']:.2f}, balanced accuracy {r['balanced']:.2f}, "
            f"said classification {r['said classification']:.0%}, unparseable {r['unparseable']:.0%} ({r['seconds']:.0f} s)"
        )
    ratio = results["open-ended"]["balanced"] / max(1e-9, results["classification"]["balanced"])
    print(f"balanced accuracy, open-ended / classification: {ratio:.2f}x")


if __name__ == "__main__":
    main()
