"""Can this model be CodecLM's judge? Contrastive Filtering keeps a pair only where the judge scores
the strong answer clearly above the target's, so a judge that cannot tell a right answer from a
wrong or empty one keeps nothing, or keeps at random.

The probe asks the CodecLM judge prompt (`synth.generators.codeclm`, both orders, scores averaged
as the generator does) about pairs where one answer is plainly right and the other plainly wrong,
off topic or empty, once in the paper's reply format and once as structured output
(`structured_judge`). It prints each pair's averaged scores and the gap (right minus wrong), then
how many gaps are above 0 and above the paper's threshold of 3. Nothing is asserted.

    .venv/bin/python bench/codeclm_judge_probe.py                      # the embedded model, about 1 min
    .venv/bin/python bench/codeclm_judge_probe.py --engine-config my_engine.toml
"""

from __future__ import annotations

import argparse
from pathlib import Path

# (question, a right answer, a wrong one)
PAIRS = [
    ("Name the three primary colors of paint.", "Red, yellow and blue.", "Bananas."),
    ("What is 12 times 12?", "12 times 12 is 144.", "12 times 12 is 21."),
    ("What is the capital of France?", "The capital of France is Paris.", "The capital of France is Berlin."),
    (
        "Explain what a noun is.",
        "A noun is a word that names a person, place, thing or idea, such as 'teacher', 'city' or 'joy'.",
        "",
    ),
    (
        "Write a haiku about autumn.",
        "Crisp leaves drift and fall\nA cool wind hums through bare trees\nThe year breathes out slow",
        "I do not know.",
    ),
    (
        "Translate 'good morning' into Spanish.",
        "'Good morning' in Spanish is 'buenos días'.",
        "'Good morning' in Spanish is 'guten Morgen'.",
    ),
    ("Is 17 a prime number? Answer yes or no.", "Yes, 17 is prime.", "No, 17 is divisible by 3."),
    (
        "Give one tip for sleeping better.",
        "Keep a regular bedtime, even at weekends.",
        "Drink three cups of coffee before bed.",
    ),
]


def probe(engine_config: Path | None, structured: bool) -> list[float | None]:
    """The averaged gap (right minus wrong) of each pair; None where a reply held no two scores."""
    from synth.cli.options import load_engine
    from synth.engines import get_engine
    from synth.generators.codeclm import CodeclmGenerator
    from synth.generators.codeclm_replies import SCORES_SCHEMA, parse_scores
    from synth.schemas.codeclm import CodeclmConfig

    # The structured judge as the small-model profile runs it (room for the JSON); the line as the paper's.
    config = CodeclmConfig(profile="small-model" if structured else "paper", structured_judge=structured)
    generator = CodeclmGenerator(config, get_engine(load_engine(engine_config)))
    requests = []
    for i, (question, right, wrong) in enumerate(PAIRS):
        for order, (one, two) in enumerate(((right, wrong), (wrong, right))):
            sampling = generator._sampling(config.judge_sampling, "probe", i, order)
            request = generator._ask("codeclm_judge", sampling, question=question, answer_1=one, answer_2=two)
            request.json_schema = SCORES_SCHEMA if structured else None
            requests.append(request)
    replies = generator.strong.chat(requests)
    gaps: list[float | None] = []
    for i, (question, _, _) in enumerate(PAIRS):
        a, b = parse_scores(replies[2 * i].text), parse_scores(replies[2 * i + 1].text)
        if a is None or b is None:
            print(
                f"  {question[:40]:42} no two scores: {replies[2 * i].text[:40]!r} | {replies[2 * i + 1].text[:40]!r}"
            )
            gaps.append(None)
            continue
        right, wrong = (a[0] + b[1]) / 2, (a[1] + b[0]) / 2
        print(f"  {question[:40]:42} right {right:4.1f}  wrong {wrong:4.1f}  gap {right - wrong:+.1f}   {a} {b}")
        gaps.append(right - wrong)
    return gaps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine-config", type=Path, default=None, help="default: the embedded model")
    args = parser.parse_args()
    for structured in (False, True):
        print(f"judge reply: {'structured (JSON)' if structured else 'a line of two scores (the paper)'}")
        gaps = probe(args.engine_config, structured)
        scored = [g for g in gaps if g is not None]
        above = sum(g > 0 for g in scored)
        kept = sum(g > 3 for g in scored)
        print(
            f"  {len(scored)} of {len(gaps)} pairs scored; the right answer ahead in {above}, "
            f"by more than 3 in {kept}\n"
        )


if __name__ == "__main__":
    main()
