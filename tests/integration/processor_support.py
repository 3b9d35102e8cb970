"""Helpers for the processor's integration tests: publishing events as ingest does, running
processors in-process, and checking the invariants against MongoDB and the stream."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import msgspec
from nats.js import JetStreamContext
from pymongo import AsyncMongoClient

from medevents import store
from medevents.config import MongoSettings, NatsSettings, ProcessorSettings, StreamSettings
from medevents.model import Event
from medevents.processor import HandlerContext, HandlerResult, Processor
from medevents.store import Document
from medevents.subjects import ingest_subject, patient_token

PARTITIONS = 4


def fast_settings(**overrides: Any) -> ProcessorSettings:
    """Processor settings for tests: no simulated delay, short ack wait, quick retries."""
    base: dict[str, Any] = {
        "port": 0,
        "delay_min_ms": 0,
        "delay_max_ms": 0,
        "ack_wait_s": 4.0,
        "member_ttl_s": 3.0,
        "retry_initial_ms": 20,
        "retry_max_ms": 500,
        "shutdown_grace_s": 5.0,
        "concurrency": 500,
    }
    return ProcessorSettings(**(base | overrides))


def event_body(patient: str, n: int, event_id: str | None = None) -> bytes:
    body: dict[str, Any] = {
        "patientId": patient,
        "type": "vitals",
        "data": {"n": n},
        "ts": "2025-10-01T10:30:00Z",
    }
    if event_id:
        body["eventId"] = event_id
    return msgspec.json.encode(body)


@dataclass
class Published:
    """What the test published: event id -> (patient, stream sequence)."""

    events: dict[str, tuple[str, int]] = field(default_factory=dict)

    def by_patient(self) -> dict[str, list[tuple[int, str]]]:
        out: dict[str, list[tuple[int, str]]] = defaultdict(list)
        for event_id, (patient, seq) in self.events.items():
            out[patient].append((seq, event_id))
        return {p: sorted(v) for p, v in out.items()}


async def publish(
    js: JetStreamContext,
    patients: Sequence[str],
    per_patient: int,
    published: Published | None = None,
    prefix: str = "e",
) -> Published:
    """Publish ``per_patient`` events for every patient, interleaved, as ingest does."""
    published = published or Published()
    futures = []
    for n in range(per_patient):
        for patient in patients:
            event_id = f"{prefix}-{patient}-{n}"
            futures.append(
                (
                    event_id,
                    patient,
                    js.publish(
                        ingest_subject(patient_token(patient)),
                        event_body(patient, n, event_id),
                        headers={"Nats-Msg-Id": event_id},
                    ),
                )
            )
    for event_id, patient, fut in futures:
        ack = await fut
        if not ack.duplicate:
            published.events[event_id] = (patient, ack.seq)
    return published


class Recorder:
    """A handler that records every execution's start and end (monotonic ns) per event."""

    def __init__(self, delay_ms: tuple[float, float] = (0, 0)) -> None:
        self.delay_ms = delay_ms
        self.runs: list[tuple[str, str, int, int]] = []  # (patient, event id, start, end)
        self.running: dict[str, str] = {}
        self.overlaps: list[tuple[str, str, str]] = []

    async def __call__(self, event: Event, context: HandlerContext) -> HandlerResult:
        other = self.running.get(event.patientId)
        if other is not None and other != context.event_id:
            self.overlaps.append((event.patientId, other, context.event_id))
        self.running[event.patientId] = context.event_id
        start = time.monotonic_ns()
        import random

        await asyncio.sleep(random.uniform(*self.delay_ms) / 1000)
        self.runs.append((event.patientId, context.event_id, start, time.monotonic_ns()))
        if self.running.get(event.patientId) == context.event_id:
            del self.running[event.patientId]
        return HandlerResult()


@asynccontextmanager
async def running_processor(
    nats_settings: NatsSettings,
    mongo_settings: MongoSettings,
    settings: ProcessorSettings | None = None,
    handler: Any = None,
) -> AsyncIterator[Processor]:
    processor = Processor(
        settings or fast_settings(),
        nats_settings,
        StreamSettings(partitions=PARTITIONS),
        mongo_settings,
        handler=handler,
    )
    await processor.start()
    try:
        yield processor
    finally:
        await processor.drain(2.0)
        await processor.close()


async def stored_documents(mongo_settings: MongoSettings) -> list[Document]:
    client: AsyncMongoClient[Document] = store.mongo_client(mongo_settings, "test")
    try:
        db = store.database(client, mongo_settings)
        return [doc async for doc in store.processed_events(db).find({}, {"_id": 0})]
    finally:
        await client.close()


async def wait_for_documents(
    mongo_settings: MongoSettings, count: int, timeout: float = 60.0
) -> list[Document]:
    deadline = time.monotonic() + timeout
    docs: list[Document] = []
    while time.monotonic() < deadline:
        docs = await stored_documents(mongo_settings)
        if len(docs) >= count:
            return docs
        await asyncio.sleep(0.2)
    return docs


def check_exactly_once_in_order(published: Published, docs: list[Document]) -> None:
    """Every published event stored once; per patient, stored sequences are the stream order and
    each event started after the previous one of its patient was stored."""
    ids = [d["eventId"] for d in docs]
    assert len(ids) == len(set(ids)), "an event was stored twice"
    assert set(ids) == set(published.events), (
        f"missing {len(set(published.events) - set(ids))}, unexpected {len(set(ids) - set(published.events))}"
    )
    by_id = {d["eventId"]: d for d in docs}
    for patient, events in published.by_patient().items():
        previous = None
        for seq, event_id in events:
            doc = by_id[event_id]
            assert doc["sequence"] == seq, (patient, event_id, doc["sequence"], seq)
            if previous is not None:
                assert doc["startedAt"] >= previous["processedAt"], (
                    f"patient {patient}: overlap or out of order"
                )
            previous = doc
