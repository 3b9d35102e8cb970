"""Benchmark 4, concurrency with the old demo's 5-6 s handler: events per minute one processor pod
sustains, with every event verified stored once and in per-patient order. Load comes through
ingest from ``medevents loadgen`` at a rate above the goal, so the processor is the bottleneck;
the sustained rate is the processed rate once the pod is full."""

from __future__ import annotations

from medevents.loadgen import LoadSpec, report, run_load
from medevents.loadgen.plot import PlotUnavailable, plot

from ._common import RESULTS, Outcome, Row, Servers, check, cpu_seconds, start_ingest, start_processor

NAME = "concurrency"
TITLE = "4. Old demo's 5-6 s handler: events/min one processor sustains (order verified)"

RATE = 450.0  # events/s offered = 27,000/min, above the goal
SECONDS = 60.0
PATIENTS = 6000
TARGET_PER_MIN = 20_000
STEADY_FROM_S = 20.0  # the pod fills up in the first 5-6 s; measure after it is full


async def run() -> Outcome:
    with Servers() as servers:
        processor = start_processor(servers)  # defaults: 5-6 s delay, 2000 in flight
        ingest = start_ingest(servers, 1)
        try:
            cpu0 = cpu_seconds(processor.child.pid)
            result = await run_load(
                LoadSpec(
                    url=ingest.url,
                    rate=RATE,
                    duration_s=SECONDS,
                    patients=PATIENTS,
                    concurrency=32,
                    nats_url=servers.nats.url,
                    mongo_uri=servers.mongo_uri,
                    wait_s=240.0,
                )
            )
            processor_cpu = cpu_seconds(processor.child.pid) - cpu0
        finally:
            ingest.stop()
            processor.stop()
    data = report(result)
    try:
        picture = RESULTS / f"concurrency-{data['run_id']}.png"
        RESULTS.mkdir(parents=True, exist_ok=True)
        plot(data, picture)
    except PlotUnavailable:
        picture = None
    window = [s for s in result.samples if s.processed is not None and STEADY_FROM_S <= s.t <= SECONDS]
    sustained = None
    if len(window) >= 2 and window[-1].t > window[0].t:
        first, last = window[0], window[-1]
        sustained = 60 * ((last.processed or 0) - (first.processed or 0)) / (last.t - first.t)
    v = result.verification
    ok = bool(v and v.ok and result.processing_done)
    rows = [
        Row("offered", "offered through ingest", 60 * data["answered_202_per_s"], "events/min"),
        Row(
            "sustained",
            f"processed, {STEADY_FROM_S:g} s to {SECONDS:g} s",
            sustained,
            "events/min",
            f">= {TARGET_PER_MIN:,}",
            check(sustained, ">=", TARGET_PER_MIN),
        ),
        Row(
            "e2e_p50",
            "end to end p50 (includes the 5-6 s handler)",
            data["processing"]["e2e_latency"]["p50_ms"],
            "ms",
        ),
        Row("e2e_p99", "end to end p99", data["processing"]["e2e_latency"]["p99_ms"], "ms"),
        Row(
            "processor_cpu",
            "processor CPU",
            100 * processor_cpu / max(1.0, result.send_s + result.wait_s),
            "%",
        ),
        Row("verified", "verified: each stored once, per-patient order", 1.0 if ok else 0.0, "", "ok", ok),
    ]
    return Outcome(
        rows, {"report": {k: v for k, v in data.items() if k != "samples"}, "samples": data["samples"]}
    )
