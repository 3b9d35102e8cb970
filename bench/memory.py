"""Benchmark 6, memory: peak RSS (VmHWM) of one ingest process under maximum load, and of one
processor holding its default concurrency (5,000 events) in flight (a long handler delay keeps them
held)."""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request
import uuid

from medevents.config import ProcessorSettings
from medevents.loadgen import LoadSpec, run_load
from medevents.loadgen.events import EventFactory

from ._common import Outcome, Row, Servers, check, peak_rss_mib, start_ingest, start_processor
from ._prefill import prefill

NAME = "memory"
TITLE = "6. Memory: peak RSS of ingest under load and of a processor holding 5,000 events"

INGEST_TARGET_MIB = 120
PROCESSOR_TARGET_MIB = 250
IN_FLIGHT = ProcessorSettings().concurrency  # the default


def _in_flight(metrics_url: str) -> float:
    with urllib.request.urlopen(metrics_url, timeout=2) as response:  # noqa: S310 - our own local URL
        text = response.read().decode()
    match = re.search(r"^medevents_processor_in_flight(?:\{[^}]*\})? ([\d.e+]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def _ingest_peak(servers: Servers) -> float:
    ingest = start_ingest(servers, 1)
    try:
        await run_load(LoadSpec(url=ingest.url, duration_s=10.0, patients=2000, concurrency=64, verify=False))
        return max(peak_rss_mib(ingest.child.pid).values())
    finally:
        ingest.stop()


async def _processor_peak(servers: Servers) -> tuple[float | None, float]:
    """Peak RSS once the processor holds ``IN_FLIGHT`` events (None if it never did), and the
    most it was seen holding."""
    factory = EventFactory(uuid.uuid4().hex[:8], IN_FLIGHT + 500, 256)
    await prefill(servers.nats.url, factory, 1)
    processor = start_processor(
        servers,
        PROCESSOR_DELAY_MIN_MS="60000",
        PROCESSOR_DELAY_MAX_MS="61000",
        PROCESSOR_CONCURRENCY=str(IN_FLIGHT),
    )
    try:
        seen = 0.0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            seen = max(seen, await asyncio.to_thread(_in_flight, processor.url + "/metrics"))
            if seen >= IN_FLIGHT:
                await asyncio.sleep(3)  # hold them a little: heartbeats, lanes, timers all running
                return max(peak_rss_mib(processor.child.pid).values()), seen
            await asyncio.sleep(0.5)
        return None, seen
    finally:
        processor.stop()


async def run() -> Outcome:
    with Servers() as servers:
        ingest_mib = await _ingest_peak(servers)
        processor_mib, held = await _processor_peak(servers)
    rows = [
        Row(
            "ingest_peak_rss",
            "ingest (1 worker) after 10 s at maximum rate",
            ingest_mib,
            "MiB",
            f"<= {INGEST_TARGET_MIB} MiB",
            check(ingest_mib, "<=", INGEST_TARGET_MIB),
        ),
        Row(
            "processor_peak_rss",
            f"processor holding {IN_FLIGHT:,} events",
            processor_mib,
            "MiB",
            f"<= {PROCESSOR_TARGET_MIB} MiB",
            check(processor_mib, "<=", PROCESSOR_TARGET_MIB),
            "" if processor_mib is not None else f"never held {IN_FLIGHT} (most seen {held:.0f})",
        ),
        Row("processor_in_flight", "events the processor held (metric)", held),
    ]
    return Outcome(rows)
