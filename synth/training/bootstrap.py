"""Paired bootstrap intervals: how sure a difference between two models scored on the same items
is. The items (reference pairs, benchmark prompts) are resampled with replacement, the same draw
for both models, `RESAMPLES` times (seeded), and the 2.5th and 97.5th percentiles of the
difference bound its 95% interval."""

from __future__ import annotations

import random
from collections.abc import Sequence

RESAMPLES = 1000


def loss(sums: Sequence[float], counts: Sequence[int], rows: Sequence[int] | None = None) -> float:
    """Sum over count of the items `rows` (all by default): loss per completion token of reference
    pairs (sums of token losses, token counts), or an accuracy (0/1 per item, counts of 1)."""
    rows = range(len(sums)) if rows is None else rows
    return sum(sums[r] for r in rows) / max(1, sum(counts[r] for r in rows))


def paired_interval(
    a: tuple[Sequence[float], Sequence[int]], b: tuple[Sequence[float], Sequence[int]], seed: int
) -> tuple[float, float, float]:
    """(`loss` of b minus `loss` of a, and its 95% paired bootstrap interval): the items are
    resampled with replacement, the same draw for both models, `RESAMPLES` times."""
    n = len(a[0])
    rng = random.Random(f"bootstrap:{seed}")
    diffs = []
    for _ in range(RESAMPLES):
        rows = [rng.randrange(n) for _ in range(n)]
        diffs.append(loss(*b, rows) - loss(*a, rows))
    diffs.sort()
    low, high = diffs[int(0.025 * RESAMPLES)], diffs[int(0.975 * RESAMPLES) - 1]
    return round(loss(*b) - loss(*a), 6), round(low, 6), round(high, 6)


def standard_deviation(values: Sequence[float]) -> float:
    """The sample standard deviation of `values` (0.0 for a single value): the spread over seeds."""
    mean = sum(values) / len(values)
    return (sum((x - mean) ** 2 for x in values) / max(1, len(values) - 1)) ** 0.5
