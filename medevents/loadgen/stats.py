"""Latency percentiles and rates over plain lists of numbers."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["PERCENTILES", "Summary", "percentile", "summarize"]

PERCENTILES = (50.0, 90.0, 99.0, 99.9)

Summary = dict[str, float | int | None]


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of already sorted values, nearest rank (a value that was
    measured, never an interpolation between two)."""
    if not sorted_values:
        raise ValueError("no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile out of range: {q}")
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def summarize(values_s: Sequence[float]) -> Summary:
    """Count, mean, percentiles and max of durations given in seconds, reported in milliseconds."""
    if not values_s:
        return {"count": 0, "mean_ms": None, "max_ms": None, **{_key(q): None for q in PERCENTILES}}
    ordered = sorted(values_s)
    out: Summary = {"count": len(ordered), "mean_ms": round(1000 * sum(ordered) / len(ordered), 3)}
    for q in PERCENTILES:
        out[_key(q)] = round(1000 * percentile(ordered, q), 3)
    out["max_ms"] = round(1000 * ordered[-1], 3)
    return out


def _key(q: float) -> str:
    return f"p{q:g}_ms".replace(".", "_")
