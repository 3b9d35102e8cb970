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

from ._common import Outcome, machine, merge, table, write_result, write_summary

NAMES = ["ingest", "latency", "processing", "concurrency", "autoscale", "memory", "olddemo", "scaleout"]


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
    header = (
        f"# medevents benchmarks {about['date']}: {about['cores']} cores, {about['memory_gib']} GiB, "
        f"{about['cpu']}, load average {about['loadavg'][0]:.2f}"
    )
    print(header, flush=True)
    summary = [header, "", f"versions: {about['versions']}, nats-server {about['nats-server']}, "
               f"wrk {about['wrk']}, ab {about['ab']}", ""]  # fmt: skip
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
        rendered = table(module.TITLE, merged)
        print("\n" + rendered + "\n", flush=True)
        load_text = ", ".join(f"{a:.1f}->{b:.1f}" for a, b in loads)
        summary += [rendered, "", f"load average before->after each run: {load_text}", ""]
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
    print(f"wrote {write_summary(chr(10).join(summary))}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
