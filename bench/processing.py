"""Benchmark 3, processing throughput with delay 0: events/s from the stream into MongoDB for one
processor (fence on), against the raw rate at which the same Mongo-wire server absorbs the same
minimal writes (one insert of the processed document plus one watermark compare-and-set per event)
issued in bulk by a tight loop in the same run (FINDINGS.md, "Processing ratio"). The processor's
result is verified: every event stored once, each patient's events in order."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from dataclasses import dataclass
from typing import Any

from pymongo import UpdateOne

from medevents import store
from medevents.config import MongoSettings
from medevents.loadgen import verify
from medevents.loadgen.events import EventFactory
from medevents.loadgen.observe import Observer

from ._common import Outcome, Row, Servers, check, cpu_seconds, start_processor
from ._prefill import prefill

NAME = "processing"
TITLE = "3. Processing throughput, delay 0, one processor vs raw bulk writes"

PATIENTS = 2000
PER_PATIENT = 10  # 20,000 events
BATCH = 256  # the processor's default PROCESSOR_WRITE_BATCH
TARGET_RATIO = 0.8


def _document(n: int, patient: str, now: dt.datetime) -> dict[str, Any]:
    """A document of the processor's shape (processor/documents.py), with a unique id."""
    return {
        "eventId": f"raw-{n}",
        "patientId": patient,
        "type": "vitals",
        "data": {"seq": n, "heartRate": 72, "pad": "x" * 120},
        "ts": now,
        "processedAt": now,
        "startedAt": now,
        "processingDurationMs": 0,
        "result": {"status": "success", "message": "Event processed successfully"},
        "sequence": n + 1,
        "partition": n % 16,
        "attempts": 1,
        "processedBy": "bench",
        "createdAt": now,
        "updatedAt": now,
    }


async def raw_write_rate(mongo_uri: str, events: int, patients: int) -> float:
    """Events/s for ``insert_many`` of ``BATCH`` documents plus as many watermark compare-and-sets
    (an insert for a patient's first event, a conditional update after), as the processor writes
    them, in a tight loop, into a database of its own with the processor's indexes."""
    settings = MongoSettings(uri=mongo_uri, db=f"raw_{uuid.uuid4().hex[:8]}")
    client = store.mongo_client(settings, "medevents-bench-raw")
    try:
        db = store.database(client, settings)
        await store.ensure_indexes(db)
        events_collection, watermarks = store.processed_events(db), store.watermarks(db)
        last: dict[str, int] = {}
        started = time.monotonic()
        for start in range(0, events, BATCH):
            now = dt.datetime.now(dt.UTC)
            ns = range(start, min(events, start + BATCH))
            docs = [_document(n, f"p{n % patients}", now) for n in ns]
            await events_collection.insert_many(docs, ordered=False)
            ops, first = [], []
            for d in docs:
                token, expected = d["patientId"], last.get(d["patientId"], 0)
                if expected == 0:
                    first.append({"_id": token, "seq": d["sequence"], "updatedAt": now})
                else:
                    ops.append(
                        UpdateOne(
                            {"_id": token, "seq": expected},
                            {"$set": {"seq": d["sequence"], "updatedAt": now}},
                        )
                    )
                last[token] = d["sequence"]
            if first:
                await watermarks.insert_many(first, ordered=False)
            if ops:
                await watermarks.bulk_write(ops, ordered=False)
        return events / (time.monotonic() - started)
    finally:
        await client.close()


@dataclass
class Drain:
    """One drain of a pre-filled stream by one or more processors."""

    steady: float | None  # events/s between 10 % and 90 % stored
    overall: float | None  # events/s from start to the last stored
    processor_cpu_s: float  # CPU of all processors
    db_cpu_s: float  # CPU of the Mongo-wire server meanwhile
    verified: bool  # every event stored once, each patient's in order


async def drain(servers: Servers, processors: int = 1, **env: str) -> tuple[Drain, dict[str, Any]]:
    """Pre-fill the stream with ``PATIENTS`` x ``PER_PATIENT`` events, start ``processors``
    processors with delay 0 and measure how fast they store them; verify the result."""
    assert servers.mongo is not None and servers.mongo.child is not None
    mongo_pid = servers.mongo.child.pid
    factory = EventFactory(uuid.uuid4().hex[:8], PATIENTS, 256)
    sent = await prefill(servers.nats.url, factory, PER_PATIENT)
    total = len(sent)
    observer = Observer(servers.nats.url, servers.mongo_uri)  # counts from the stream: cheap
    await observer.start()
    try:
        procs = [
            start_processor(servers, PROCESSOR_DELAY_MIN_MS="0", PROCESSOR_DELAY_MAX_MS="0", **env)
            for _ in range(processors)
        ]
        try:
            cpu0 = sum(cpu_seconds(p.child.pid) for p in procs)
            db0 = cpu_seconds(mongo_pid)
            marks: dict[int, float] = {}
            started = time.monotonic()
            deadline = started + 600
            while time.monotonic() < deadline:
                done = await observer.processed() or 0
                for share in (10, 90, 100):
                    if done >= total * share // 100 and share not in marks:
                        marks[share] = time.monotonic()
                if done >= total:
                    break
                await asyncio.sleep(0.1)
            processor_cpu = sum(cpu_seconds(p.child.pid) for p in procs) - cpu0
            db_cpu = cpu_seconds(mongo_pid) - db0
        finally:
            for p in procs:
                p.stop()
        docs = await observer.documents([factory.patient_id(p) for p in range(PATIENTS)])
    finally:
        await observer.close()
    verification, _ = verify(sent, docs)
    steady = total * 0.8 / (marks[90] - marks[10]) if 10 in marks and 90 in marks else None
    overall = total / (marks[100] - started) if 100 in marks else None
    ok = verification.ok and verification.missing == 0
    return Drain(steady, overall, processor_cpu, db_cpu, ok), {"verification": verification, "marks": marks}


async def run() -> Outcome:
    with Servers() as servers:
        assert servers.mongo is not None and servers.mongo.child is not None
        mongo_pid = servers.mongo.child.pid
        result, data = await drain(servers)
        total = PATIENTS * PER_PATIENT
        db0 = cpu_seconds(mongo_pid)
        raw = await raw_write_rate(servers.mongo_uri, total, PATIENTS)
        raw_db_cpu = cpu_seconds(mongo_pid) - db0
    ratio = result.steady / raw if result.steady else None
    rows = [
        Row("events", "events (pre-filled stream)", total),
        Row("processor_rate", "processor, 10% to 90% stored", result.steady, "events/s"),
        Row("processor_rate_all", "processor, start to last stored", result.overall, "events/s"),
        Row("raw_rate", "raw bulk insert + watermark CAS, tight loop", raw, "events/s"),
        Row(
            "ratio",
            "ratio processor / raw",
            ratio,
            "x",
            f">= {TARGET_RATIO}",
            check(ratio, ">=", TARGET_RATIO),
        ),
        Row("processor_cpu_per_event", "processor CPU per event", 1e6 * result.processor_cpu_s / total, "us"),
        Row(
            "db_cpu_per_event",
            "SecantusDB CPU per event, processor run",
            1e6 * result.db_cpu_s / total,
            "us",
        ),
        Row("raw_db_cpu_per_event", "SecantusDB CPU per event, raw loop", 1e6 * raw_db_cpu / total, "us"),
        Row(
            "verified",
            "verified: each stored once, per-patient order",
            1.0 if result.verified else 0.0,
            "",
            "ok",
            result.verified,
        ),
    ]
    return Outcome(rows, data)
