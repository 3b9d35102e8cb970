"""``python -m bench [NAME ...] [--repeat N]``: run the benchmarks (all by default), print one table
each, and write ``bench/results/<name>-<time>.json``. ``make bench`` runs them all."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from types import ModuleType
from typing import Any

import uvloop

from ._common import Outcome, machine, merge, table, write_result

NAMES = ["ingest", "latency", "processing", "concurrency", "autoscale", "memory", "olddemo"]


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"bench.{name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"any of {', '.join(NAMES)} (default: all)")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each benchmark (default 2)")
    args = parser.parse_args(argv)
    names = args.names or NAMES
    unknown = sorted(set(names) - set(NAMES))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {NAMES}")
    about = machine()
    print(
        f"# medevents benchmarks {about['date']}: {about['cores']} cores, {about['memory_gib']} GiB, "
        f"{about['cpu']}, load average {about['loadavg'][0]:.2f}",
        flush=True,
    )
    for name in names:
        module = _module(name)
        runs: list[Outcome] = []
        loads: list[tuple[float, float]] = []
        started = time.monotonic()
        for i in range(args.repeat):
            print(f"[{name}] run {i + 1} of {args.repeat} ...", file=sys.stderr, flush=True)
            before = os.getloadavg()[0]
            runs.append(uvloop.run(module.run()))
            loads.append((before, os.getloadavg()[0]))
        merged = merge([r.rows for r in runs])
        print("\n" + table(module.TITLE, merged) + "\n", flush=True)
        payload: dict[str, Any] = {
            "benchmark": name,
            "title": module.TITLE,
            "machine": about,
            "seconds": round(time.monotonic() - started, 1),
            "loadavg_before_after": loads,
            "rows": merged,
            "runs": [{"rows": r.rows, "data": r.data} for r in runs],
        }
        print(f"wrote {write_result(name, payload)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
