"""``--plot FILE.png``: rate in, rate out, lag and processors over time (matplotlib, the optional
``plot`` extra)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

__all__ = ["PlotUnavailable", "plot"]


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


def _rates(samples: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """Per-second rates between consecutive samples of the counter ``key``."""
    ts: list[float] = []
    rates: list[float] = []
    for a, b in itertools.pairwise(samples):
        if a[key] is None or b[key] is None or b["t"] <= a["t"]:
            continue
        ts.append(b["t"])
        rates.append((b[key] - a[key]) / (b["t"] - a["t"]))
    return ts, rates


def plot(data: dict[str, Any], path: Path) -> None:
    """Draw the report's samples into ``path``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError as exc:
        raise PlotUnavailable("--plot needs matplotlib: pip install 'medevents[plot]'") from exc
    samples = data["samples"]
    fig, (top, middle, bottom) = plt.subplots(3, 1, sharex=True, figsize=(9, 7))
    top.plot(*_rates(samples, "accepted"), label="in (accepted/s)")
    top.plot(*_rates(samples, "processed"), label="out (processed/s)")
    top.set_ylabel("events/s")
    top.legend(loc="upper right")
    middle.plot(
        [s["t"] for s in samples if s["lag"] is not None], [s["lag"] for s in samples if s["lag"] is not None]
    )
    middle.set_ylabel("lag (events)")
    pairs = [(s["t"], s["processors"]) for s in samples if s["processors"] is not None]
    bottom.step([t for t, _ in pairs], [n for _, n in pairs], where="post")
    bottom.set_ylabel("processors")
    bottom.set_ylim(bottom=0, top=max([n for _, n in pairs], default=0) + 1)
    bottom.yaxis.set_major_locator(MaxNLocator(integer=True))
    bottom.set_xlabel("seconds since start")
    fig.suptitle(f"medevents loadgen run {data['run_id']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
