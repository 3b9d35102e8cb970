"""Benchmark 1, ingest vs its ceilings, with fsync on (the shipped configuration) and off.

``POST /events`` of one ingest worker (wrk, closed loop), against, in the same run and on the same
nats-server:

- the raw JetStream publish rate one Python process reaches with ingest's technique (many
  publishes pending on one reply subscription) and no HTTP at all: the real limit of a durable
  ingest, since with fsync on every publish waits for the server's disk;
- a bare Starlette app that reads the body and answers 202 without validating or publishing, under
  uvicorn with the same settings: the cost of the HTTP framework alone.

Both nats-server configurations are measured in the same run: ``sync_interval: always`` (what
``medevents up`` and the chart ship: fsync before every PubAck) and the opt-out
``MEDEVENTS_NATS_SYNC=interval``, so the report shows what the guarantee costs. ``POST
/events/batch`` (100 events per request) is measured with both too, and the disk's own fsync
latency is probed in the servers' directory: on a shared machine it moves with other processes'
I/O, and every durable publish waits for it. Last, ingest with OpenTelemetry tracing off and on
(every request sampled, exported over OTLP/HTTP to a receiver that discards it), alternated in the
same run: tracing off must cost nothing, and the ratio says what turning it on costs.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Literal

from medevents import tracing

from ._common import (
    Outcome,
    Row,
    Servers,
    check,
    cpu_seconds,
    fsync_ms,
    start_bare,
    start_ingest,
    start_otlp_sink,
)
from ._load import LoadStats, max_rate, run_wrk
from ._natspub import publish_rate

NAME = "ingest"
TITLE = "1. Ingest vs raw JetStream publishing and bare Starlette (1 worker, closed loop)"

SECONDS = 10.0
CONNECTIONS = 64
BATCH_ITEMS = 100
BATCH_CONNECTIONS = 8
TARGET_RAW_RATIO = 0.8  # ingest req/s over the raw publish rate, fsync on
TARGET_CPU_US = 100.0  # ingest CPU per accepted request, fsync on
TRACING_ROUNDS = 2  # off, on, off, on: drift of a shared machine falls on both sides

_MODES: dict[Literal["always", "interval"], tuple[str, str]] = {
    "always": ("on", "fsync on (shipped)"),
    "interval": ("off", "fsync off (MEDEVENTS_NATS_SYNC=interval)"),
}


async def _measure(
    start: Any, servers: Servers, *, batch: int = 0, env: dict[str, str] | None = None
) -> tuple[LoadStats, float]:
    """Closed-loop load on a fresh server process: its stats and the CPU seconds it used."""
    proc = start(servers, 1, **(env or {}))
    try:
        if batch:
            await _wrk(proc.url, 1.0, BATCH_CONNECTIONS, batch)  # warm-up
            cpu0 = cpu_seconds(proc.child.pid)
            stats = await _wrk(proc.url, SECONDS, BATCH_CONNECTIONS, batch)
        else:
            cpu0 = cpu_seconds(proc.child.pid)
            stats = await max_rate(proc.url, SECONDS, CONNECTIONS)
        return stats, cpu_seconds(proc.child.pid) - cpu0
    finally:
        proc.stop()


async def _wrk(url: str, seconds: float, connections: int, batch: int) -> LoadStats:
    return await asyncio.to_thread(run_wrk, url, seconds, connections, 1, batch)


def _per_request_us(cpu_s: float, stats: LoadStats) -> float:
    return 1e6 * cpu_s / max(1, stats.requests - stats.non_2xx - stats.socket_errors)


async def run() -> Outcome:
    rows: list[Row] = []
    data: dict[str, Any] = {"connections": CONNECTIONS}
    rates: dict[str, dict[str, float]] = {}
    for sync, (tag, mode) in _MODES.items():
        with Servers(mongo=False, sync=sync) as servers:
            disk = fsync_ms(servers.dir)
            raw = await publish_rate(servers.nats.url, SECONDS / 2)
            ingest, ingest_cpu = await _measure(start_ingest, servers)
            batch, batch_cpu = await _measure(start_ingest, servers, batch=BATCH_ITEMS)
            bare, bare_cpu = (None, 0.0)
            if sync == "always":  # the bare app does not publish: once is enough; tracing likewise
                bare, bare_cpu = await _measure(start_bare, servers)
                rows += await _tracing_cost(servers, data)
        ratio = ingest.rps / raw.rate if raw.rate else None
        cpu_us = _per_request_us(ingest_cpu, ingest)
        on = sync == "always"
        rates[tag] = {"ingest": ingest.rps, "raw": raw.rate, "batch": batch.rps * BATCH_ITEMS}
        rows += [
            Row(f"fsync_p50_{tag}", f"{mode}: the disk's fsync p50 (probe)", disk["p50"], "ms"),
            Row(f"raw_rate_{tag}", f"{mode}: raw JetStream publish, one Python process", raw.rate, "msg/s"),
            Row(f"ingest_rps_{tag}", f"{mode}: ingest, wrk -c{CONNECTIONS}", ingest.rps, "req/s"),
            Row(
                f"ratio_raw_{tag}",
                f"{mode}: ratio ingest / raw publish",
                ratio,
                "x",
                f">= {TARGET_RAW_RATIO}" if on else "",
                check(ratio, ">=", TARGET_RAW_RATIO) if on else None,
            ),
            Row(
                f"ingest_cpu_us_{tag}",
                f"{mode}: ingest CPU per accepted request",
                cpu_us,
                "us",
                f"<= {TARGET_CPU_US:g} us" if on else "",
                check(cpu_us, "<=", TARGET_CPU_US) if on else None,
            ),
            Row(f"raw_cpu_us_{tag}", f"{mode}: raw publisher CPU per message", raw.cpu_us, "us"),
            Row(f"ingest_p50_{tag}", f"{mode}: ingest p50", ingest.p50_ms, "ms"),
            Row(f"ingest_p99_{tag}", f"{mode}: ingest p99", ingest.p99_ms, "ms"),
            Row(
                f"batch_eps_{tag}",
                f"{mode}: POST /events/batch ({BATCH_ITEMS} events, wrk -c{BATCH_CONNECTIONS})",
                batch.rps * BATCH_ITEMS,
                "events/s",
            ),
            Row(
                f"batch_cpu_us_{tag}",
                f"{mode}: ingest CPU per event in batches",
                1e6 * batch_cpu / max(1, batch.requests * BATCH_ITEMS),
                "us",
            ),
        ]
        if bare is not None:
            bare_ratio = ingest.rps / bare.rps if bare.rps else None
            rows += [
                Row("bare_rps", "bare Starlette, same wrk load", bare.rps, "req/s"),
                Row("ratio_bare", f"{mode}: ratio ingest / bare", bare_ratio, "x"),
                Row("bare_cpu_us", "bare CPU per request", _per_request_us(bare_cpu, bare), "us"),
                Row("bare_p99", "bare p99", bare.p99_ms, "ms"),
            ]
        failures = ingest.non_2xx + ingest.socket_errors + batch.non_2xx + batch.socket_errors
        data[tag] = {"ingest": ingest.__dict__, "batch": batch.__dict__, "raw": raw.__dict__, "disk": disk}
        if failures:
            rows.append(Row(f"failures_{tag}", f"{mode}: non-2xx or socket errors", failures))
    for what, label in (("ingest", "ingest req/s"), ("raw", "raw publish rate"), ("batch", "batch events/s")):
        off = rates["off"][what]
        cost = rates["on"][what] / off if off else None
        rows.append(Row(f"fsync_cost_{what}", f"fsync on / off: {label}", cost, "x"))
    return Outcome(rows, data)


async def _tracing_cost(servers: Servers, data: dict[str, Any]) -> list[Row]:
    """Ingest req/s with tracing off, on (every request sampled) and on with 10 % sampled,
    alternated (1 worker, the same load), plus what tracing off adds to a request in-process."""
    sink = start_otlp_sink(servers)
    variants: dict[str, dict[str, str]] = {
        "off": {},
        "on": {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.url},
        "sampled": {
            "OTEL_EXPORTER_OTLP_ENDPOINT": sink.url,
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.1",
        },
    }
    runs: dict[str, list[LoadStats]] = {name: [] for name in variants}
    try:
        for _ in range(TRACING_ROUNDS):
            for name, env in variants.items():
                runs[name].append((await _measure(start_ingest, servers, env=env))[0])
    finally:
        sink.stop()
    rps = {name: sum(s.rps for s in stats) / len(stats) for name, stats in runs.items()}
    data["tracing"] = {name: [s.__dict__ for s in stats] for name, stats in runs.items()}
    ratio = rps["on"] / rps["off"] if rps["off"] else None
    sampled = rps["sampled"] / rps["off"] if rps["off"] else None
    off_us = _tracing_off_cost_us()
    print(
        f"ingest req/s tracing off {rps['off']:,.0f}, on {rps['on']:,.0f} (on/off = {ratio or 0:.2f}), "
        f"10% sampled {rps['sampled']:,.0f} ({sampled or 0:.2f}); tracing off adds {off_us:.2f} us a request"
    )
    return [
        Row("tracing_off_rps", "ingest, tracing off (OTEL_* unset), 1 worker", rps["off"], "req/s"),
        Row(
            "tracing_on_rps",
            "ingest, tracing on (every request sampled, OTLP/HTTP), 1 worker",
            rps["on"],
            "req/s",
        ),
        Row("tracing_ratio", "ratio tracing on / off", ratio, "x"),
        Row("tracing_sampled_rps", "ingest, tracing on, 10 % sampled, 1 worker", rps["sampled"], "req/s"),
        Row("tracing_sampled_ratio", "ratio tracing 10 % sampled / off", sampled, "x"),
        Row(
            "tracing_off_us",
            "what tracing off adds to one request (its span sites, in-process)",
            off_us,
            "us",
        ),
    ]


def _tracing_off_cost_us(n: int = 200_000) -> float:
    """Microseconds the ingest hot path spends on tracing while it is off: its two span sites
    and the header-injection test, timed in this process (tracing is never configured here)."""
    started = time.perf_counter()
    for _ in range(n):
        with tracing.span("validate event"):
            pass
        with tracing.span("publish EVENTS", kind=tracing.SpanKind.PRODUCER) as span:
            if span is not None:
                span.set_attribute("x", 1)
        if tracing.enabled:
            tracing.inject({})
    return (time.perf_counter() - started) / n * 1e6
