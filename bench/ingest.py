"""Benchmark 1, ingest vs bare: ``POST /events`` of the ingest service against a bare Starlette app
that reads the body and answers 202 without validating or publishing, both under uvicorn with the
same settings, hit by the same load tool with the same payloads; with 1 and 2 workers. Also the
raw JetStream publish rate of one Python process (the ceiling under ingest), the load
generator's own ceiling against the bare app, and ingest with OpenTelemetry tracing off and on
(every request sampled, exported over OTLP/HTTP to a receiver that discards it), alternated in the
same run: tracing off must cost nothing, and the ratio says what turning it on costs."""

from __future__ import annotations

from typing import Any

from ._common import Outcome, Row, Servers, check, cpu_seconds, start_bare, start_ingest, start_otlp_sink
from ._load import LoadStats, has_wrk, max_rate, run_loadgen
from ._natspub import publish_rate

NAME = "ingest"
TITLE = "1. Ingest vs bare Starlette (POST /events, closed loop)"

SECONDS = 10.0
CONNECTIONS = 64
TARGET_RATIO = 0.75


TRACING_ROUNDS = 2  # off, on, off, on: drift of a shared machine falls on both sides


async def _measure(start: Any, servers: Servers, workers: int, **env: str) -> tuple[LoadStats, float]:
    proc = start(servers, workers, **env)
    try:
        cpu0 = cpu_seconds(proc.child.pid)
        stats = await max_rate(proc.url, SECONDS, CONNECTIONS)
        return stats, cpu_seconds(proc.child.pid) - cpu0
    finally:
        proc.stop()


async def run() -> Outcome:
    rows: list[Row] = []
    data: dict[str, Any] = {"tool": "wrk" if has_wrk() else "loadgen", "connections": CONNECTIONS}
    with Servers() as servers:
        for workers in (1, 2):
            bare, bare_cpu = await _measure(start_bare, servers, workers)
            ingest, ingest_cpu = await _measure(start_ingest, servers, workers)
            ratio = ingest.rps / bare.rps if bare.rps else None
            w = f"{workers}w"
            tool = bare.tool
            rows += [
                Row(f"bare_rps_{w}", f"bare, {workers} worker(s), {tool}", bare.rps, "req/s"),
                Row(f"ingest_rps_{w}", f"ingest, {workers} worker(s), {tool}", ingest.rps, "req/s"),
                Row(f"bare_p50_{w}", f"bare p50, {workers} worker(s)", bare.p50_ms, "ms"),
                Row(f"bare_p99_{w}", f"bare p99, {workers} worker(s)", bare.p99_ms, "ms"),
                Row(f"ingest_p50_{w}", f"ingest p50, {workers} worker(s)", ingest.p50_ms, "ms"),
                Row(f"ingest_p99_{w}", f"ingest p99, {workers} worker(s)", ingest.p99_ms, "ms"),
                Row(
                    f"ratio_{w}",
                    f"ratio ingest / bare, {workers} worker(s)",
                    ratio,
                    "x",
                    f">= {TARGET_RATIO}",
                    check(ratio, ">=", TARGET_RATIO),
                ),
                Row(
                    f"ingest_cpu_per_req_{w}",
                    f"ingest CPU per request, {workers} worker(s)",
                    1e6 * ingest_cpu / max(1, ingest.requests),
                    "us",
                ),
                Row(
                    f"bare_cpu_per_req_{w}",
                    f"bare CPU per request, {workers} worker(s)",
                    1e6 * bare_cpu / max(1, bare.requests),
                    "us",
                ),
            ]
            failures = ingest.non_2xx + ingest.socket_errors + bare.non_2xx + bare.socket_errors
            data[w] = {"bare": bare.__dict__, "ingest": ingest.__dict__, "failures": failures}
            if failures:
                rows.append(Row(f"failures_{w}", f"non-2xx or socket errors, {workers} worker(s)", failures))
        nats_rate = await publish_rate(servers.nats.url, SECONDS / 2)
        rows.append(Row("nats_publish_rate", "raw JetStream publish, one Python process", nats_rate, "msg/s"))
        bare_app = start_bare(servers, 1)
        try:
            client = await run_loadgen(bare_app.url, SECONDS / 2, CONNECTIONS)
        finally:
            bare_app.stop()
        rows.append(Row("loadgen_ceiling", "medevents loadgen against bare, 1 worker", client.rps, "req/s"))
        rows += await _tracing_cost(servers, data)
    return Outcome(rows, data)


async def _tracing_cost(servers: Servers, data: dict[str, Any]) -> list[Row]:
    """Ingest req/s with tracing off and on, alternated (1 worker, the same load)."""
    sink = start_otlp_sink(servers)
    traced = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.url}
    off: list[LoadStats] = []
    on: list[LoadStats] = []
    try:
        for _ in range(TRACING_ROUNDS):
            off.append((await _measure(start_ingest, servers, 1))[0])
            on.append((await _measure(start_ingest, servers, 1, **traced))[0])
    finally:
        sink.stop()
    off_rps = sum(s.rps for s in off) / len(off)
    on_rps = sum(s.rps for s in on) / len(on)
    data["tracing"] = {"off": [s.__dict__ for s in off], "on": [s.__dict__ for s in on]}
    ratio = on_rps / off_rps if off_rps else None
    print(f"ingest req/s tracing off {off_rps:,.0f}, on {on_rps:,.0f}: on/off = {ratio or 0:.2f}")
    return [
        Row("tracing_off_rps", "ingest, tracing off (OTEL_* unset), 1 worker", off_rps, "req/s"),
        Row(
            "tracing_on_rps",
            "ingest, tracing on (every request sampled, OTLP/HTTP), 1 worker",
            on_rps,
            "req/s",
        ),
        Row("tracing_ratio", "ratio tracing on / off", ratio, "x"),
    ]
