"""Benchmark 1, ingest vs bare: ``POST /events`` of the ingest service against a bare Starlette app
that reads the body and answers 202 without validating or publishing, both under uvicorn with the
same settings, hit by the same load tool with the same payloads; with 1 and 2 workers. Also the
raw JetStream publish rate of one Python process (the ceiling under ingest), the load
generator's own ceiling against the bare app, and ingest with OpenTelemetry tracing off and on
(every request sampled, exported over OTLP/HTTP to a receiver that discards it), alternated in the
same run: tracing off must cost nothing, and the ratio says what turning it on costs."""

from __future__ import annotations

import time
from typing import Any

from medevents import tracing

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
                runs[name].append((await _measure(start_ingest, servers, 1, **env))[0])
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
