"""Benchmark 4, concurrency with the old demo's 5-6 s handler: events per minute one processor pod
sustains with its default settings, with every event verified stored once and in per-patient
order, and its peak memory. Load comes through ingest from ``medevents loadgen`` at a rate above
the goal, so the processor is the bottleneck; the sustained rate is the processed rate once the pod
is full. Run with nats-server fsyncing every message (shipped) and with the opt-out, in the same
run."""

from __future__ import annotations

import time
from typing import Any, Literal

from medevents.loadgen import LoadSpec, report, run_load
from medevents.loadgen.plot import PlotUnavailable, plot

from ._common import (
    RESULTS,
    Outcome,
    Row,
    Servers,
    busy_seconds,
    check,
    cpu_seconds,
    peak_rss_mib,
    start_ingest,
    start_processor,
)
from .processing import raw_write_rate

NAME = "concurrency"
TITLE = "4. Old demo's 5-6 s handler: events/min one processor pod sustains (defaults, order verified)"

RATE = 833.0  # events/s offered = 50,000/min, above the goal
SECONDS = 60.0
# Each patient's events run one after another (5-6 s each): with 20,000 patients a patient gets an
# event about every 24 s, so per-patient order never limits the rate.
PATIENTS = 20_000
TARGET_PER_MIN = 40_000
TARGET_RSS_MIB = 250.0
EVENTS = int(RATE * SECONDS)
STORE_EVENTS = 10_000  # for the store's raw write rate after the run, as many per patient as in the run
STEADY_FROM_S = 20.0  # the pod fills up in the first 5-6 s; measure after it is full

_MODES: dict[Literal["always", "interval"], tuple[str, str]] = {
    "always": ("on", "fsync on (shipped)"),
    "interval": ("off", "fsync off"),
}


async def run() -> Outcome:
    rows: list[Row] = []
    data: dict[str, Any] = {}
    for sync, (tag, mode) in _MODES.items():
        mode_rows, mode_data = await _run(sync, tag, mode)
        rows += mode_rows
        data[tag] = mode_data
    return Outcome(rows, data)


async def _run(sync: Literal["always", "interval"], tag: str, mode: str) -> tuple[list[Row], dict[str, Any]]:
    on = sync == "always"
    with Servers(sync=sync) as servers:
        processor = start_processor(servers)  # defaults: 5-6 s delay, PROCESSOR_CONCURRENCY in flight
        ingest = start_ingest(servers, 1)
        assert servers.mongo is not None and servers.mongo.child is not None
        assert servers.nats.child is not None
        pids = {
            "processor": processor.child.pid,
            "ingest": ingest.child.pid,
            "nats": servers.nats.child.pid,
            "store": servers.mongo.child.pid,
        }
        try:
            cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
            loadgen0 = time.process_time()  # this process alone (the servers are its children)
            busy0, wall0 = busy_seconds(), time.monotonic()
            result = await run_load(
                LoadSpec(
                    url=ingest.url,
                    rate=RATE,
                    duration_s=SECONDS,
                    patients=PATIENTS,
                    concurrency=64,
                    nats_url=servers.nats.url,
                    mongo_uri=servers.mongo_uri,
                    wait_s=240.0,
                )
            )
            wall = time.monotonic() - wall0
            busy = (busy_seconds() - busy0) / wall
            cores = {name: (cpu_seconds(pid) - cpu0[name]) / wall for name, pid in pids.items()}
            cores["loadgen"] = (time.process_time() - loadgen0) / wall
            processor_cpu = cores["processor"] * wall
            rss = max(peak_rss_mib(processor.child.pid).values(), default=None)
        finally:
            ingest.stop()
            processor.stop()
        # The store's own ceiling in this run: the minimal writes every event needs (benchmark 3's
        # raw loop, same write concern), with nothing else running.
        store_rate = await raw_write_rate(servers.mongo_uri, STORE_EVENTS, STORE_EVENTS * PATIENTS // EVENTS)
    data = report(result)
    try:
        picture = RESULTS / f"concurrency-{tag}-{data['run_id']}.png"
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
        Row(
            f"offered_{tag}", f"{mode}: offered through ingest", 60 * data["answered_202_per_s"], "events/min"
        ),
        Row(
            f"sustained_{tag}",
            f"{mode}: processed, {STEADY_FROM_S:g} s to {SECONDS:g} s",
            sustained,
            "events/min",
            f">= {TARGET_PER_MIN:,}" if on else "",
            check(sustained, ">=", TARGET_PER_MIN) if on else None,
        ),
        Row(
            f"store_ceiling_{tag}",
            f"{mode}: the store's ceiling (raw insert + watermark CAS, same run)",
            60 * store_rate,
            "events/min",
        ),
        Row(
            f"rss_{tag}",
            f"{mode}: processor peak RSS",
            rss,
            "MiB",
            f"<= {TARGET_RSS_MIB:g} MiB" if on else "",
            check(rss, "<=", TARGET_RSS_MIB) if on else None,
        ),
        Row(
            f"e2e_p50_{tag}",
            f"{mode}: end to end p50 (includes the 5-6 s handler)",
            data["processing"]["e2e_latency"]["p50_ms"],
            "ms",
        ),
        Row(f"e2e_p99_{tag}", f"{mode}: end to end p99", data["processing"]["e2e_latency"]["p99_ms"], "ms"),
        Row(
            f"processor_cpu_{tag}",
            f"{mode}: processor CPU",
            100 * processor_cpu / max(1.0, result.send_s + result.wait_s),
            "%",
        ),
        Row(
            f"cores_pipeline_{tag}",
            f"{mode}: cores used by the pipeline (ingest, nats-server, processor, store, load generator)",
            sum(cores.values()),
            "cores",
        ),
        Row(f"cores_store_{tag}", f"{mode}: of which the store (SecantusDB)", cores["store"], "cores"),
        Row(
            f"cores_others_{tag}",
            f"{mode}: cores used by other processes on the machine",
            max(0.0, busy - sum(cores.values())),
            "cores",
        ),
        Row(
            f"verified_{tag}",
            f"{mode}: verified: each stored once, per-patient order",
            1.0 if ok else 0.0,
            "",
            "ok",
            ok,
        ),
    ]
    return rows, {"report": {k: v for k, v in data.items() if k != "samples"}, "samples": data["samples"]}
