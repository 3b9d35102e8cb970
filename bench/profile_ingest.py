"""Where one ingest worker spends its CPU under maximum load: ``python -m bench.profile_ingest``.

Starts nats-server and ``medevents ingest`` (1 worker), drives ``POST /events`` with wrk (or the
load generator), samples the worker with py-spy (``pip install py-spy``; not a dependency), and
prints the share of samples per function, inclusive and self. docs/BENCHMARKS.md records what it
showed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import uvloop

from ._common import Servers, start_ingest
from ._load import max_rate

SECONDS = 20


def _frame(frame: str) -> str:
    """``func (path/file.py:line)`` -> ``func file.py``."""
    name, _, where = frame.partition(" (")
    return f"{name} {where.rsplit('/', 1)[-1].split(':', 1)[0]}".strip()


def summarize(collapsed: str, top: int = 30) -> str:
    """Inclusive and self shares of samples from py-spy's raw (collapsed stack) output."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_frame(f) for f in stack.split(";")]
        for frame in set(frames):
            inclusive[frame] += n
        own[frames[-1]] += n
    if not total:
        return "no samples"
    lines = [f"{total} samples", "", "inclusive:"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(top)]
    lines += ["", "self:"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    return "\n".join(lines)


def profile() -> str:
    """Profile one ingest worker for ``SECONDS`` under maximum load; the summary as text."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        raise SystemExit("py-spy is not installed: pip install py-spy")
    with Servers(mongo=False) as servers, tempfile.TemporaryDirectory() as tmp:
        ingest = start_ingest(servers, 1)
        out = Path(tmp) / "profile.txt"
        try:
            argv = [py_spy, "record", "-p", str(ingest.child.pid), "-d", str(SECONDS), "-r", "250"]
            spy = subprocess.Popen([*argv, "-f", "raw", "-o", str(out)], stdout=subprocess.DEVNULL)
            stats = uvloop.run(max_rate(ingest.url, SECONDS - 3, 64))
            spy.wait()
        finally:
            ingest.stop()
        header = f"{stats.tool}: {stats.rps:,.0f} req/s, p50 {stats.p50_ms} ms, p99 {stats.p99_ms} ms"
        return header + "\n" + summarize(out.read_text())


if __name__ == "__main__":
    print(profile())
