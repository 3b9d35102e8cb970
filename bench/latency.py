"""Benchmark 2, latency under load: the p99 of ``POST /events`` (one ingest worker) at half of the
maximum rate measured in the same run with the same tool (``medevents loadgen``: wrk cannot hold a
fixed rate). Baselines at the same rate in the same run: the bare app (same tool), and JetStream
publishing alone from one Python process; together they show how much of the tail is HTTP on this
machine, how much the durable write's round trip, and how much ingest itself."""

from __future__ import annotations

from msgspec.structs import replace

from medevents.loadgen import LoadSpec, report, run_load

from ._common import Outcome, Row, Servers, check, fsync_ms, start_bare, start_ingest
from ._natspub import publish_latency

NAME = "latency"
TITLE = "2. Latency of POST /events at 50% of the maximum rate (1 worker)"

MAX_SECONDS = 8.0
RATE_SECONDS = 20.0
TARGET_P99_MS = 10.0  # where the machine is quiet enough: the bare app's p99 under QUIET_BARE_P99_MS
QUIET_BARE_P99_MS = 5.0
TARGET_BARE_RATIO = 2.0  # ingest p99 over the bare app's p99 at the same offered rate


async def run() -> Outcome:
    with Servers() as servers:
        ingest = start_ingest(servers, 1)
        try:
            base = LoadSpec(url=ingest.url, duration_s=2.0, patients=2000, concurrency=64, verify=False)
            await run_load(base)  # warm-up
            peak = report(await run_load(replace(base, duration_s=MAX_SECONDS)))
            rate = round(peak["answered_202_per_s"] / 2)
            disk = fsync_ms(servers.dir)
            half = report(await run_load(replace(base, duration_s=RATE_SECONDS, rate=rate)))
        finally:
            ingest.stop()
        bare = start_bare(servers, 1)
        try:
            await run_load(replace(base, url=bare.url))  # warm-up
            bare_half = report(
                await run_load(replace(base, url=bare.url, duration_s=RATE_SECONDS, rate=rate))
            )
        finally:
            bare.stop()
        nats = await publish_latency(servers.nats.url, rate, RATE_SECONDS)
    accept, planned = half["accept_latency"], half["scheduled_latency"]
    p99 = accept["p99_ms"]
    bare_p99 = bare_half["accept_latency"]["p99_ms"]
    ratio = p99 / bare_p99 if p99 is not None and bare_p99 else None
    quiet = bare_p99 is not None and bare_p99 < QUIET_BARE_P99_MS
    rows = [
        Row("max_rate", "maximum rate (loadgen, 64 connections)", peak["answered_202_per_s"], "req/s"),
        Row("rate", "offered rate (50%)", half["answered_202_per_s"], "req/s"),
        Row("p50", "p50 at 50%", accept["p50_ms"], "ms"),
        Row(
            "p99",
            "p99 at 50%",
            p99,
            "ms",
            f"<= {TARGET_P99_MS:g} ms if bare p99 < {QUIET_BARE_P99_MS:g} ms",
            check(p99, "<=", TARGET_P99_MS) if quiet else None,
            "" if quiet else f"not judged: bare p99 >= {QUIET_BARE_P99_MS:g} ms, machine too busy",
        ),
        Row(
            "ratio_bare_p99",
            "p99 ingest / p99 bare at the same rate",
            ratio,
            "x",
            f"<= {TARGET_BARE_RATIO:g}",
            check(ratio, "<=", TARGET_BARE_RATIO),
        ),
        Row("p99_9", "p99.9 at 50%", accept["p99_9_ms"], "ms"),
        Row(
            "p99_planned", "p99 from the planned send time (no coordinated omission)", planned["p99_ms"], "ms"
        ),
        Row("errors", "errors at 50%", half["error_total"]),
        Row("bare_p50", "bare app at the same rate: p50", bare_half["accept_latency"]["p50_ms"], "ms"),
        Row("bare_p99", "bare app at the same rate: p99", bare_p99, "ms"),
        Row(
            "bare_p99_planned",
            "bare app: p99 from the planned send time",
            bare_half["scheduled_latency"]["p99_ms"],
            "ms",
        ),
        Row(
            "nats_p50",
            "JetStream publish alone, same rate, no HTTP: p50",
            nats["p50_ms"],
            "ms",
        ),
        Row("nats_p99", "JetStream publish alone at the same rate: p99", nats["p99_ms"], "ms"),
        Row("fsync_p50", "the disk's fsync p50 (probe, before the run at 50%)", disk["p50"], "ms"),
        Row("fsync_p99", "the disk's fsync p99 (probe)", disk["p99"], "ms"),
    ]
    return Outcome(
        rows,
        {
            "max": {k: v for k, v in peak.items() if k != "samples"},
            "half": {k: v for k, v in half.items() if k != "samples"},
            "bare_half": {k: v for k, v in bare_half.items() if k != "samples"},
        },
    )
