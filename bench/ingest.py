"""Benchmark 1, ingest vs bare: ``POST /events`` of the ingest service against a bare Starlette app
that reads the body and answers 202 without validating or publishing, both under uvicorn with the
same settings, hit by the same load tool with the same payloads; with 1 and 2 workers. Also the
raw JetStream publish rate of one Python process (the ceiling under ingest), and the load
generator's own ceiling against the bare app."""

from __future__ import annotations

from typing import Any

from ._common import Outcome, Row, Servers, check, cpu_seconds, start_bare, start_ingest
from ._load import LoadStats, has_wrk, max_rate, run_loadgen
from ._natspub import publish_rate

NAME = "ingest"
TITLE = "1. Ingest vs bare Starlette (POST /events, closed loop)"

SECONDS = 10.0
CONNECTIONS = 64
TARGET_RATIO = 0.75


async def _measure(start: Any, servers: Servers, workers: int) -> tuple[LoadStats, float]:
    proc = start(servers, workers)
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
    return Outcome(rows, data)
