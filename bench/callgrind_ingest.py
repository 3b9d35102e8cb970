"""Instructions per request of one ingest worker, counted by valgrind's callgrind:
``python -m bench.callgrind_ingest [--requests N] [--concurrency C] [--bare] [--top K]``.

Wall-clock CPU time on a shared 2-core machine moves by tens of percent between runs; the number
of instructions a process executes for the same work does not (it moves by well under 1 %), so
this is the tool to compare two versions of the hot path. It starts nats-server (the shipped
configuration, fsync before every PubAck) and ``medevents ingest`` with one worker under
``valgrind --tool=callgrind``, warms the worker up, zeroes the counters (``callgrind_control
--zero``), sends exactly N unique events of the benchmark's shape over C keep-alive connections,
dumps the counters (``--dump``) and divides the instructions counted by N. ``--bare``
measures the bare Starlette app of benchmark 1 the same way. ``--top K`` prints the K functions
with the most inclusive instructions (C level: the interpreter's own functions and the extension
modules; ``python -m bench.profile_ingest`` samples the Python stack instead).

Needs valgrind (``apt-get install valgrind``). A run takes a minute or two: the worker runs about
50 times slower under callgrind.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from medevents.loadgen._http import Connection, Target
from medevents.loadgen.events import EventFactory
from medevents.local import spawn
from medevents.local.procs import Child
from medevents.local.servers import free_port

from ._common import REPO, Servers, wait_http

WARMUP = 500


async def _send(port: int, bodies: list[bytes], concurrency: int, path: bytes = b"/events") -> int:
    """POST every body over ``concurrency`` connections; the number of 2xx answers."""
    target = Target("127.0.0.1", port)
    queue = list(reversed(bodies))
    ok = 0

    async def worker() -> None:
        nonlocal ok
        connection = Connection(target, timeout=120)
        try:
            while queue:
                body = queue.pop()
                response = await connection.request(
                    b"POST", path, body, b"Content-Type: application/json\r\n"
                )
                ok += 200 <= response.status < 300
        finally:
            connection.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ok


# valgrind and vgdb (behind callgrind_control) name their shared memory after USER and HOST:
# give both the same, else a session without USER cannot reach the process. HOST is also the
# ingest's listen address (its alias of INGEST_HOST).
_VGDB_ENV = {"USER": os.environ.get("USER") or "bench", "HOST": "127.0.0.1"}


def _control(pid: int, *args: str) -> None:
    out = subprocess.run(
        ["callgrind_control", *args, str(pid)],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **_VGDB_ENV},
    )
    if "error" in (out.stdout + out.stderr).lower() or out.returncode:
        raise RuntimeError(f"callgrind_control {' '.join(args)}: {out.stdout}{out.stderr}")


def _dump(out: Path) -> Path:
    """The dump ``callgrind_control -d`` wrote (``<out>.<n>``; ``<out>`` itself is the one
    written at exit)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # the process writes it when it next takes commands
        dumps = [p for p in out.parent.glob(out.name + ".*") if p.suffix.lstrip(".").isdigit()]
        if dumps and any(_summary_line(p) for p in dumps):
            return max(dumps, key=lambda p: int(p.suffix[1:]))
        time.sleep(0.5)
    raise RuntimeError(f"callgrind wrote no dump next to {out}")


def _summary_line(dump: Path) -> str:
    lines = dump.read_text(errors="replace").splitlines()
    return next((line for line in lines if line.startswith("summary:")), "")


def _summary(dump: Path) -> int:
    return int(_summary_line(dump).split()[1])


def _top(dump: Path, k: int) -> str:
    if shutil.which("callgrind_annotate") is None:
        return ""
    result = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", "--threshold=99", str(dump)],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [line for line in result.stdout.splitlines() if re.match(r"^\s*[\d,]+ \(", line)]
    return "\n".join(lines[:k])


def measure(requests: int, concurrency: int, bare: bool = False, top: int = 0) -> dict[str, object]:
    """Instructions per request of ingest (or the bare app) for ``requests`` POST /events."""
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed: apt-get install valgrind")
    factory = EventFactory(uuid.uuid4().hex[:8], 1000, 256)
    bodies = [factory.body(n % 1000, n // 1000) for n in range(WARMUP + requests)]
    with Servers(mongo=False) as servers, tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        port = free_port()  # HOST (in _VGDB_ENV) is the listen address
        # The interpreter itself, not a launcher script: callgrind_control finds the process by
        # the command valgrind runs.
        valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable]
        if bare:
            argv = [*valgrind, "-m", "bench._bare", str(port), "1"]
            env = {"PYTHONPATH": str(REPO), "PYTHONHASHSEED": "0", **_VGDB_ENV}
        else:
            # The console script run by the interpreter (``-m medevents`` from the repository root
            # would import the source tree, where the components are not under medevents/).
            argv = [*valgrind, str(Path(sys.executable).parent / "medevents"), "ingest"]
            env = servers.env(
                PORT=str(port),
                HOST=_VGDB_ENV["HOST"],
                INGEST_WORKERS="1",
                PYTHONHASHSEED="0",
                USER=_VGDB_ENV["USER"],
            )
        child: Child = spawn("callgrind", argv, env=env, log_path=Path(tmp) / "server.log")
        try:
            wait_http(f"http://127.0.0.1:{port}/readyz", timeout=600, child=child)
            warm = asyncio.run(_send(port, bodies[:WARMUP], concurrency))
            _control(child.pid, "--zero")
            started = time.monotonic()
            ok = asyncio.run(_send(port, bodies[WARMUP:], concurrency))
            elapsed = time.monotonic() - started
            _control(child.pid, "--dump")
            dump = _dump(out)
            instructions = _summary(dump)
            table = _top(dump, top) if top else ""
        finally:
            child.stop(60)
    return {
        "server": "bare" if bare else "ingest",
        "requests": requests,
        "answered_2xx": ok,
        "warm_up_2xx": warm,
        "concurrency": concurrency,
        "instructions": instructions,
        "instructions_per_request": instructions / max(1, ok),
        "seconds_under_valgrind": round(elapsed, 1),
        "top": table,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.callgrind_ingest", description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--bare", action="store_true", help="the bare Starlette app instead of ingest")
    parser.add_argument("--top", type=int, default=0, help="print the K functions with most instructions")
    args = parser.parse_args(argv)
    result = measure(args.requests, args.concurrency, args.bare, args.top)
    print(
        f"{result['server']}: {result['instructions_per_request']:,.0f} instructions per request "
        f"({result['answered_2xx']} of {result['requests']} answered 2xx, concurrency "
        f"{result['concurrency']}, {result['seconds_under_valgrind']} s under valgrind)"
    )
    if result["top"]:
        print(result["top"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
