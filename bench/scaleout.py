"""Benchmark 8, scale-out on one machine: what a second process buys.

Ingest with ``INGEST_WORKERS=1`` and ``2`` under the same wrk load (fsync on, the shipped
configuration), and one and two processors draining the same pre-filled stream with delay 0 (as
benchmark 3). On this 2-core machine the load generator, nats-server and SecantusDB share the two
cores with the processes measured, so the table shows what a second process buys here, next to
the CPU each side used; on a machine with cores to spare the second process has its own.
"""

from __future__ import annotations

from typing import Any

from ._common import Outcome, Row, Servers, cpu_seconds, start_ingest
from ._load import max_rate
from .processing import PATIENTS, PER_PATIENT, drain

NAME = "scaleout"
TITLE = "8. Scale-out on one machine: 1 vs 2 ingest workers, 1 vs 2 processors"

SECONDS = 10.0
CONNECTIONS = 64


async def run() -> Outcome:
    rows: list[Row] = []
    data: dict[str, Any] = {}
    ingest_rps: dict[int, float] = {}
    with Servers(mongo=False) as servers:
        for workers in (1, 2):
            proc = start_ingest(servers, workers)
            try:
                cpu0 = cpu_seconds(proc.child.pid)
                stats = await max_rate(proc.url, SECONDS, CONNECTIONS)
                cpu = cpu_seconds(proc.child.pid) - cpu0
            finally:
                proc.stop()
            ingest_rps[workers] = stats.rps
            data[f"ingest_{workers}"] = stats.__dict__
            rows += [
                Row(f"ingest_rps_{workers}", f"ingest, INGEST_WORKERS={workers}", stats.rps, "req/s"),
                Row(
                    f"ingest_cores_{workers}",
                    f"ingest, INGEST_WORKERS={workers}: cores used",
                    cpu / SECONDS,
                    "cores",
                ),
            ]
    rows.append(Row("ingest_gain", "ingest: 2 workers / 1 worker", ingest_rps[2] / ingest_rps[1], "x"))
    rates: dict[int, float | None] = {}
    for processors in (1, 2):
        with Servers() as servers:
            result, _ = await drain(servers, processors)
        rates[processors] = result.steady
        data[f"processors_{processors}"] = result.__dict__
        rows += [
            Row(f"processing_{processors}", f"{processors} processor(s), delay 0", result.steady, "events/s"),
            Row(
                f"processing_db_cpu_{processors}",
                f"{processors} processor(s): SecantusDB CPU per event",
                1e6 * result.db_cpu_s / (PATIENTS * PER_PATIENT),
                "us",
            ),
            Row(
                f"processing_verified_{processors}",
                f"{processors} processor(s): verified (each stored once, in order)",
                1.0 if result.verified else 0.0,
                "",
                "ok",
                result.verified,
            ),
        ]
    one, two = rates[1], rates[2]
    rows.append(
        Row("processing_gain", "processing: 2 processors / 1", two / one if one and two else None, "x")
    )
    return Outcome(rows, data)
