"""Processor *processes* for the fault-injection tests: spawned as ``medevents processor`` with a
recording handler, killed and started again, and the recorded executions checked."""

from __future__ import annotations

import itertools
import os
import random
import signal
import sys
import time
import urllib.error
import urllib.request
from collections import defaultdict
from pathlib import Path

from medevents.config import MongoSettings
from medevents.local import free_port
from medevents.local.procs import Child, spawn

from .processor_support import PARTITIONS, Published

# Imported by the spawned processors (PROCESSOR_HANDLER=chaos_handler:handle): a random delay,
# and one line per execution start and end, appended to a file shared by all processes.
HANDLER_SOURCE = """
import asyncio, os, random, time
from medevents.processor import HandlerResult

_log = open(os.environ["CHAOS_LOG"], "a", buffering=1)
_lo, _hi = float(os.environ["CHAOS_DELAY_MIN_MS"]), float(os.environ["CHAOS_DELAY_MAX_MS"])


async def handle(event, context):
    start = time.monotonic_ns()
    _log.write(f"S {context.event_id} {start}\\n")
    await asyncio.sleep(random.uniform(_lo, _hi) / 1000)
    _log.write(f"E {context.event_id} {start} {time.monotonic_ns()}\\n")
    return HandlerResult()
"""


class ProcessorFleet:
    """Processor processes sharing one NATS, one database and one execution log."""

    def __init__(
        self,
        tmp: Path,
        nats_url: str,
        mongo: MongoSettings,
        delay_ms: tuple[int, int] = (0, 20),
        **env: str,
    ) -> None:
        self.tmp = tmp
        self.log = tmp / "executions.log"
        (tmp / "chaos_handler.py").write_text(HANDLER_SOURCE)
        self.env = {
            "NATS_URL": nats_url,
            "MONGO_URI": mongo.uri,
            "MONGO_DB": mongo.database,
            "MEDEVENTS_PARTITIONS": str(PARTITIONS),
            "PROCESSOR_HANDLER": "chaos_handler:handle",
            "PYTHONPATH": str(tmp),
            "CHAOS_LOG": str(self.log),
            "CHAOS_DELAY_MIN_MS": str(delay_ms[0]),
            "CHAOS_DELAY_MAX_MS": str(delay_ms[1]),
            "PROCESSOR_ACK_WAIT_S": "3",
            "PROCESSOR_MEMBER_TTL_S": "2",
            "PROCESSOR_RETRY_INITIAL_MS": "20",
            "PROCESSOR_RETRY_MAX_MS": "1000",
            "PROCESSOR_SHUTDOWN_GRACE_S": "5",
            "PROCESSOR_CONCURRENCY": "300",
            "LOG_LEVEL": "INFO",
            **env,
        }
        self.children: dict[str, tuple[Child, int]] = {}
        self.started = 0

    def start(self, member_id: str = "") -> str:
        """Start one more processor (``processor-<n>``; its member id is its name unless given)."""
        self.started += 1
        name = f"processor-{self.started}"
        port = free_port()
        env = {**self.env, "PORT": str(port), "PROCESSOR_MEMBER_ID": member_id or name}
        command = [str(Path(sys.executable).parent / "medevents"), "processor"]
        self.children[name] = (spawn(name, command, env=env, log_path=self.tmp / f"{name}.log"), port)
        return name

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        for name, (child, port) in list(self.children.items()):
            while True:
                assert child.alive(), f"{name} exited: {self.tail(name)}"
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1):
                        break
                except (urllib.error.URLError, OSError):
                    assert time.monotonic() < deadline, f"{name} not ready: {self.tail(name)}"
                    time.sleep(0.1)

    def metric(self, name: str, metric: str) -> float:
        _, port = self.children[name]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(metric + " "):
                    return float(line.split()[1])
        return 0.0

    def tail(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")[-3000:]

    def kill(self, name: str) -> None:
        child, _ = self.children.pop(name)
        child.kill()

    def terminate(self, name: str) -> int:
        child, _ = self.children.pop(name)
        return child.stop(timeout=20)

    def kill_random(self, rng: random.Random) -> str:
        name = rng.choice(sorted(self.children))
        self.kill(name)
        return name

    def signal(self, name: str, sig: signal.Signals) -> None:
        self.children[name][0].signal(sig)

    def stop_all(self) -> None:
        for name in list(self.children):
            self.terminate(name)

    def kill_all(self) -> None:
        for name in list(self.children):
            child, _ = self.children.pop(name)
            if child.alive():
                os.kill(child.pid, signal.SIGKILL)
            child.kill()


def check_executions(published: Published, log: Path) -> None:
    """Across all processes: an event never started before the previous event of its patient had
    finished at least once (complete executions), and every event ran to the end at least once."""
    starts: dict[str, int] = {}
    ends: dict[str, int] = {}
    for line in log.read_text().splitlines():
        parts = line.split()
        if parts[0] == "S":
            starts[parts[1]] = min(starts.get(parts[1], 1 << 62), int(parts[2]))
        elif parts[0] == "E" and len(parts) == 4:
            ends[parts[1]] = min(ends.get(parts[1], 1 << 62), int(parts[3]))
    violations: dict[str, list[str]] = defaultdict(list)
    for patient, events in published.by_patient().items():
        for (_, previous), (_, event_id) in itertools.pairwise(events):
            assert previous in ends, f"{previous} never finished"
            if starts[event_id] < ends[previous]:
                violations[patient].append(f"{event_id} started before {previous} ended")
    assert not violations, dict(violations)
