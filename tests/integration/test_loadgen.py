"""``medevents loadgen`` against the real ingest on a real nats-server, verifying from real MongoDB
documents.

The processor is another component; here a small stand-in copies the stream into
``processed_events`` in stream order (the document fields the processor writes), so these tests
check the load generator itself: its counts, its waiting, and that its verification catches a
missing event or a patient applied out of order.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest
from nats.aio.msg import Msg

from medevents import store, topology
from medevents.cli import main
from medevents.config import MongoSettings, NatsSettings
from medevents.loadgen import LoadSpec, report, run_load, text
from medevents.loadgen.observe import FIELDS
from medevents.local import free_port

from .conftest import RunningIngest, stream_messages

Doc = dict[str, Any]


def _doc(msg: Msg, processed_at: dt.datetime) -> Doc:
    event = msgspec.json.decode(msg.data)
    assert msg.headers is not None
    doc: Doc = {
        FIELDS["event_id"]: msg.headers["Nats-Msg-Id"],
        FIELDS["patient_id"]: event["patientId"],
        "type": event["type"],
        "data": event["data"],
        FIELDS["stream_seq"]: msg.metadata.sequence.stream,
        FIELDS["started_at"]: processed_at,
        FIELDS["processed_at"]: processed_at,
        "result": {"status": "success"},
    }
    return doc


Tamper = Callable[[list[Doc]], list[Doc]]


@contextlib.asynccontextmanager
async def copier(
    nats_settings: NatsSettings, mongo_settings: MongoSettings, tamper: Tamper | None = None
) -> AsyncIterator[None]:
    """A stand-in processor: stream -> processed_events, in stream order, acking what it wrote.
    ``tamper`` may change each written batch (drop or reorder documents) to give verification
    something to find."""
    nc = await nats.connect(nats_settings.url)
    client = store.mongo_client(mongo_settings, "test-copier")
    collection = store.processed_events(store.database(client, mongo_settings))
    await store.ensure_indexes(store.database(client, mongo_settings))
    sub = await nc.jetstream().pull_subscribe("events.>", durable="copier", stream=topology.STREAM)
    stop = asyncio.Event()
    clock = [dt.datetime.now(dt.UTC)]

    def tick() -> dt.datetime:  # one millisecond apart at least: BSON dates keep milliseconds
        clock[0] = max(dt.datetime.now(dt.UTC), clock[0] + dt.timedelta(milliseconds=1))
        return clock[0]

    async def copy() -> None:
        while not stop.is_set():
            try:
                msgs = await sub.fetch(200, timeout=0.2)
            except TimeoutError:  # nats-py raises its own subclass or, on one path, asyncio's
                continue
            docs = [_doc(m, tick()) for m in msgs]
            docs = tamper(docs) if tamper else docs
            if docs:
                await collection.insert_many(docs, ordered=False)
            for m in msgs:
                await m.ack()

    task = asyncio.create_task(copy())
    try:
        yield
    finally:
        stop.set()
        try:
            await task
        finally:
            await nc.close()
            await client.close()


def spec(
    ingest: RunningIngest, nats_settings: NatsSettings, mongo: MongoSettings | None, **kw: Any
) -> LoadSpec:
    defaults: dict[str, Any] = {
        "url": ingest.url,
        "count": 300,
        "patients": 20,
        "concurrency": 8,
        "nats_url": nats_settings.url,
        "mongo_uri": mongo.uri if mongo else None,
        "mongo_db": mongo.db if mongo else "",
        "wait_s": 20.0,
    }
    return LoadSpec(**(defaults | kw))


async def test_counts_match_the_stream(ingest: RunningIngest, nats_settings: NatsSettings) -> None:
    result = await run_load(spec(ingest, nats_settings, None, count=400, duplicates=0.2))
    assert result.sent == 400
    assert result.errors == {}
    assert result.accepted + result.duplicates == 400
    assert 30 < result.duplicates < 130  # about 20 %, drawn at random with a fixed seed
    assert len(result.accept_latency_s) == 400
    messages = await stream_messages(ingest.service.publisher._js)  # type: ignore[arg-type]
    assert len(messages) == result.accepted
    # each patient's events are in the stream in the order they were numbered (no two in flight)
    seqs: dict[str, list[int]] = {}
    for _, _, payload, _ in messages:
        event = msgspec.json.decode(payload)
        seqs.setdefault(event["patientId"], []).append(event["data"]["seq"])
    assert len(seqs) == 20
    assert all(s == list(range(len(s))) for s in seqs.values())
    assert result.processing_done is None  # no MongoDB given: not observed


async def test_a_correct_run_verifies(
    ingest: RunningIngest, nats_settings: NatsSettings, mongo_settings: MongoSettings
) -> None:
    async with copier(nats_settings, mongo_settings):
        result = await run_load(spec(ingest, nats_settings, mongo_settings, duplicates=0.1))
    assert result.processing_done is True
    v = result.verification
    assert v is not None
    assert v.ok, v
    assert (v.expected, v.stored, v.missing) == (result.accepted, result.accepted, 0)
    assert v.order_checked
    assert len(result.e2e_latency_s) == result.accepted
    assert all(0 <= lat < 30 for lat in result.e2e_latency_s)
    data = report(result)
    assert data["verification"]["ok"] is True
    assert data["processing"]["processed_per_s"] > 0
    assert "verified    OK" in text(data)
    assert any(s.lag is not None for s in result.samples)


async def test_a_missing_event_is_caught(
    ingest: RunningIngest, nats_settings: NatsSettings, mongo_settings: MongoSettings
) -> None:
    dropped: list[str] = []

    def drop_one(docs: list[Doc]) -> list[Doc]:
        if dropped or not docs:
            return docs
        dropped.append(docs[0][FIELDS["event_id"]])
        return docs[1:]

    async with copier(nats_settings, mongo_settings, drop_one):
        result = await run_load(spec(ingest, nats_settings, mongo_settings, wait_s=3.0))
    v = result.verification
    assert v is not None
    assert result.processing_done is False  # one document never came
    assert (v.ok, v.missing, v.samples["missing"]) == (False, 1, dropped)


async def test_a_patient_applied_out_of_order_is_caught(
    ingest: RunningIngest, nats_settings: NatsSettings, mongo_settings: MongoSettings
) -> None:
    swapped: list[str] = []

    def reverse_one_patient(docs: list[Doc]) -> list[Doc]:
        """Give one patient's events in this batch reversed processing times."""
        if swapped:
            return docs
        by_patient: dict[str, list[Doc]] = {}
        for d in docs:
            by_patient.setdefault(d[FIELDS["patient_id"]], []).append(d)
        for patient, mine in by_patient.items():
            if len(mine) >= 2:
                times = [d[FIELDS["processed_at"]] for d in mine]
                for d, t in zip(mine, reversed(times), strict=True):
                    d[FIELDS["processed_at"]] = t
                swapped.append(patient)
                break
        return docs

    async with copier(nats_settings, mongo_settings, reverse_one_patient):
        result = await run_load(spec(ingest, nats_settings, mongo_settings, count=400, patients=4))
    v = result.verification
    assert v is not None
    assert swapped, "the copier never saw two events of one patient in a batch"
    assert (v.ok, v.out_of_order, v.samples["out_of_order_patients"]) == (False, 1, swapped)
    assert v.missing == 0


async def test_nothing_listening_counts_connect_errors(nats_settings: NatsSettings) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = await run_load(LoadSpec(url=url, count=20, patients=4, concurrency=2))
    assert result.sent == 20
    assert result.errors == {"connect": 20}
    assert result.accepted == 0


async def test_target_rate_is_kept(ingest: RunningIngest, nats_settings: NatsSettings) -> None:
    result = await run_load(spec(ingest, nats_settings, None, count=60, rate=100.0))
    # 60 requests spaced 10 ms apart cannot finish sooner than 0.59 s
    assert result.send_s >= 0.59
    assert len(result.scheduled_latency_s) == 60


async def test_the_command_line(
    ingest: RunningIngest, nats_settings: NatsSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "endpoints.json").write_text(json.dumps({"ingest": ingest.url, "nats": nats_settings.url}))
    out = tmp_path / "report.json"
    argv = ["loadgen", "--data-dir", str(tmp_path), "--count", "50", "--patients", "5", "--json", str(out)]
    code = await asyncio.to_thread(main, argv)
    assert code == 0
    data = json.loads(out.read_text())
    assert (data["sent"], data["accepted"], data["error_total"]) == (50, 50, 0)
    assert data["spec"]["url"] == ingest.url
    assert "sent        50" in capsys.readouterr().out
    assert await asyncio.to_thread(main, ["loadgen", "--data-dir", str(tmp_path / "none")]) == 2
