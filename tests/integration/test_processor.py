"""The processor against real nats-server and Mongo-wire servers: the old demo's scenarios."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from pymongo import AsyncMongoClient

from medevents import store, topology
from medevents.cluster import Tuning, decode_member, encode
from medevents.config import MongoSettings, NatsSettings, StreamSettings
from medevents.metrics import render
from medevents.model import Event
from medevents.natsconn import ensure_stream
from medevents.processor import HandlerContext, HandlerResult, PermanentError, Processor, TransientError
from medevents.processor.deadletter import EVENT_ID_HEADER, list_dead_letters, replay_dead_letters
from medevents.processor.server import health_app
from medevents.store import Document
from medevents.subjects import ingest_subject, partition_of, patient_token

from .conftest import RunningIngest
from .processor_support import (
    PARTITIONS,
    Recorder,
    check_exactly_once_in_order,
    event_body,
    fast_settings,
    publish,
    running_processor,
    stored_documents,
    wait_for_documents,
)


async def test_two_processors_apply_each_patient_in_order_once(
    nats_settings: NatsSettings, mongo_settings: MongoSettings, js: JetStreamContext
) -> None:
    recorder = Recorder(delay_ms=(0, 5))
    async with (
        running_processor(nats_settings, mongo_settings, handler=recorder),
        running_processor(nats_settings, mongo_settings, handler=recorder),
    ):
        published = await publish(js, [f"p{i}" for i in range(10)], 20)
        docs = await wait_for_documents(mongo_settings, len(published.events))
    check_exactly_once_in_order(published, docs)
    assert recorder.overlaps == []


async def test_the_same_event_posted_twice_is_stored_once_and_reported_processed(
    nats_settings: NatsSettings, mongo_settings: MongoSettings, ingest: RunningIngest
) -> None:
    event = {
        "patientId": "patient-123",
        "type": "vitals",
        "data": {"heartRate": 72},
        "ts": "2025-10-01T10:30:00Z",
    }
    first = await ingest.client.post("/events", json=event)
    second = await ingest.client.post("/events", json=event)
    assert first.status_code == second.status_code == 202
    assert second.json()["duplicate"] is True
    event_id = first.json()["eventId"]
    async with running_processor(nats_settings, mongo_settings):
        docs = await wait_for_documents(mongo_settings, 1)
        for _ in range(50):
            answer = await ingest.client.get(f"/events/{event_id}")
            if answer.status_code == 200:
                break
            await asyncio.sleep(0.1)
    assert [d["eventId"] for d in docs] == [event_id]
    doc = docs[0]
    assert doc["patientId"] == "patient-123" and doc["data"] == {"heartRate": 72}
    assert doc["result"] == {"status": "success", "message": "Event processed successfully"}
    assert doc["attempts"] == 1 and doc["partition"] in range(4) and doc["sequence"] == 1
    for field in ("processedAt", "processingDurationMs", "createdAt", "updatedAt", "ts"):
        assert field in doc
    assert answer.status_code == 200 and answer.json()["status"] == "processed"


async def test_an_event_id_repeated_after_the_duplicate_window_is_stored_once(
    nats_settings: NatsSettings, mongo_settings: MongoSettings, js: JetStreamContext
) -> None:
    async with running_processor(nats_settings, mongo_settings):
        for n, msg_id in enumerate(("first-publish", "second-publish")):
            # Two stream messages carrying one event id: what JetStream lets through once its
            # duplicate window has passed.
            await js.publish(
                ingest_subject("p-dup"),
                event_body("p-dup", n),
                headers={"Nats-Msg-Id": msg_id, EVENT_ID_HEADER: "same-event"},
            )
        await js.publish(
            ingest_subject("p-dup"), event_body("p-dup", 9, "after"), headers={"Nats-Msg-Id": "after"}
        )
        docs = await wait_for_documents(mongo_settings, 2)
        await asyncio.sleep(0.5)
        docs = await stored_documents(mongo_settings)
    assert sorted(d["eventId"] for d in docs) == ["after", "same-event"]
    assert next(d for d in docs if d["eventId"] == "same-event")["data"] == {"n": 0}  # the first one wins


async def test_health_readiness_and_metrics(
    nats_settings: NatsSettings, mongo_settings: MongoSettings
) -> None:
    async with running_processor(nats_settings, mongo_settings) as processor:
        transport = httpx.ASGITransport(app=health_app(processor))
        async with httpx.AsyncClient(transport=transport, base_url="http://processor") as client:
            health = await client.get("/health")
            ready = await client.get("/readyz")
            live = await client.get("/livez")
            metrics = (await client.get("/metrics")).text
    assert health.content == b'{"status":"ok","service":"processor-service"}'
    assert ready.status_code == 200 and live.status_code == 200
    for name in (
        "medevents_processor_in_flight",
        "medevents_processor_lanes",
        "medevents_processor_processing_seconds_bucket",
        "medevents_processor_end_to_end_seconds_bucket",
        "medevents_processor_applied_total",
        "medevents_processor_duplicates_total",
        "medevents_processor_failed_total",
        "medevents_processor_partitions_owned 4.0",
    ):
        assert name in metrics


async def test_transient_handler_errors_retry_in_order(
    nats_settings: NatsSettings, mongo_settings: MongoSettings, js: JetStreamContext
) -> None:
    failures: dict[str, int] = {}
    order: list[int] = []

    async def flaky(event: Event, context: HandlerContext) -> HandlerResult:
        if failures.setdefault(context.event_id, 0) < 2:
            failures[context.event_id] += 1
            raise TransientError("downstream unavailable")
        order.append(event.data["n"])
        return HandlerResult()

    async with running_processor(nats_settings, mongo_settings, handler=flaky):
        published = await publish(js, ["flaky"], 5)
        docs = await wait_for_documents(mongo_settings, 5)
    check_exactly_once_in_order(published, docs)
    assert order == [0, 1, 2, 3, 4]
    assert all(d["attempts"] == 3 for d in docs)


async def test_failures_are_dead_lettered_later_events_continue_and_replay_works(
    nats_settings: NatsSettings, mongo_settings: MongoSettings, js: JetStreamContext
) -> None:
    healed = False
    runs: list[int] = []

    async def picky(event: Event, context: HandlerContext) -> HandlerResult:
        runs.append(event.data["n"])
        if not healed and event.data["n"] == 1:
            raise PermanentError("cannot read this device")
        if not healed and event.data["n"] == 3:
            raise ValueError("always the same error")
        return HandlerResult()

    settings = fast_settings(max_attempts=3)
    async with running_processor(nats_settings, mongo_settings, settings, handler=picky):
        published = await publish(js, ["dlq-patient"], 5)
        docs = await wait_for_documents(mongo_settings, 5)
        check_exactly_once_in_order(published, docs)
        status = {d["data"]["n"]: d["result"]["status"] for d in docs}
        assert status == {0: "success", 1: "failed", 2: "success", 3: "failed", 4: "success"}
        assert runs == [0, 1, 2, 3, 3, 3, 4]  # permanent: once; same error: max_attempts times
        failed = {d["data"]["n"]: d for d in docs if d["result"]["status"] == "failed"}
        assert "PermanentError: cannot read this device" in failed[1]["result"]["message"]
        assert failed[3]["attempts"] == 3

        letters = await list_dead_letters(js)
        assert [(x.event_id, x.patient_id, x.sequence) for x in letters] == [
            ("e-dlq-patient-1", "dlq-patient", published.events["e-dlq-patient-1"][1]),
            ("e-dlq-patient-3", "dlq-patient", published.events["e-dlq-patient-3"][1]),
        ]
        assert "ValueError: always the same error" in letters[1].error

        healed = True
        client: AsyncMongoClient[Document] = store.mongo_client(mongo_settings, "test")
        try:
            replayed = await replay_dead_letters(
                js, store.database(client, mongo_settings), event_id="e-dlq-patient-3"
            )
        finally:
            await client.close()
        assert [x.event_id for x in replayed] == ["e-dlq-patient-3"]
        docs = await _wait_status(mongo_settings, "e-dlq-patient-3", "success")
        by_id = {d["eventId"]: d for d in docs}
        assert len(docs) == 5
        assert by_id["e-dlq-patient-1"]["result"]["status"] == "failed"

        # The command line: list, then replay by patient.
        env = {
            "NATS_URL": nats_settings.url,
            "MONGO_URI": mongo_settings.uri,
            "MONGO_DB": mongo_settings.database,
        }
        env["MEDEVENTS_PATIENT_HASH_KEY"] = "dlq-test-key"
        listed = await _medevents(env, "dlq", "list")
        assert [json.loads(line)["event_id"] for line in listed.splitlines()] == ["e-dlq-patient-1"]
        # The patient as the logs' keyed hash by default; the id only when asked for.
        assert "dlq-patient" not in listed.replace("e-dlq-patient-1", "")
        expected = hmac.new(b"dlq-test-key", b"dlq-patient", hashlib.sha256).hexdigest()[:16]
        assert json.loads(listed)["patient"] == expected
        shown = json.loads(await _medevents(env, "dlq", "list", "--show-patient"))
        assert (shown["patient"], shown["patient_id"]) == (expected, "dlq-patient")
        replayed_out = await _medevents(env, "dlq", "replay", "--patient", "dlq-patient")
        assert json.loads(replayed_out)["replayed"] == "e-dlq-patient-1"
        docs = await _wait_status(mongo_settings, "e-dlq-patient-1", "success")
    assert len(docs) == 5 and all(d["result"]["status"] == "success" for d in docs)
    assert await list_dead_letters(js) == []


async def _wait_status(mongo_settings: MongoSettings, event_id: str, status: str) -> list[Document]:
    for _ in range(100):
        docs = await stored_documents(mongo_settings)
        if any(d["eventId"] == event_id and d["result"]["status"] == status for d in docs):
            return docs
        await asyncio.sleep(0.1)
    raise AssertionError(f"{event_id} never became {status}")


async def _medevents(env: dict[str, str], *args: str) -> str:
    command = [str(Path(sys.executable).parent / "medevents"), *args]
    done = await asyncio.to_thread(
        subprocess.run, command, env={**os.environ, **env}, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_live_tuning_and_membership_records(
    nats_settings: NatsSettings, mongo_settings: MongoSettings, js: JetStreamContext
) -> None:
    async with running_processor(nats_settings, mongo_settings, fast_settings(member_ttl_s=1.5)) as processor:
        tuning = await js.key_value(topology.TUNING_BUCKET)
        await tuning.put(
            topology.TUNING_KEY, encode(Tuning(concurrency=7, delay_min_ms=1, delay_max_ms=2, max_attempts=2))
        )
        members = await js.key_value(topology.MEMBERS_BUCKET)
        for _ in range(50):
            record = decode_member((await members.get(processor.member_id)).value or b"")
            if record.capacity == 7:
                break
            await asyncio.sleep(0.1)
        assert processor.capacity.limit == 7 and processor.live.max_attempts == 2
        assert (processor.live.delay_min_ms, processor.live.delay_max_ms) == (1, 2)
        assert record.capacity == 7 and record.partitions == [0, 1, 2, 3] and not record.draining
    with pytest.raises(KeyNotFoundError):  # it left the membership on the way out
        await members.get(processor.member_id)


async def test_existing_consumers_are_reported_not_overwritten(
    nats_settings: NatsSettings, mongo_settings: MongoSettings, js: JetStreamContext
) -> None:
    await ensure_stream(js, StreamSettings(partitions=PARTITIONS))
    slow = topology.consumer_config(0, ack_wait_s=10, max_ack_pending=512)
    wrong = topology.consumer_config(1, ack_wait_s=4, max_ack_pending=512)
    wrong.filter_subject = "events.1.just-one-patient"
    await js.add_consumer(topology.STREAM, slow)
    await js.add_consumer(topology.STREAM, wrong)
    async with running_processor(nats_settings, mongo_settings) as processor:
        assert (await js.consumer_info(topology.STREAM, "processor-0")).config.ack_wait == 10
        assert (
            await js.consumer_info(topology.STREAM, "processor-1")
        ).config.filter_subject == wrong.filter_subject
        assert processor.owned == [0, 2, 3]  # the one with the wrong ack policy is not pulled
        reasons = await processor.readiness()
        assert len(reasons) == 1 and "processor-1" in reasons[0] and "filter_subject" in reasons[0]
        metrics = render(processor.metrics.registry).decode()
        assert 'medevents_processor_consumer_mismatch{partition="0"} 1.0' in metrics
        assert 'medevents_processor_consumer_mismatch{partition="2"} 0.0' in metrics


async def test_a_deleted_consumer_is_created_again(
    nats_settings: NatsSettings, mongo_settings: MongoSettings, js: JetStreamContext
) -> None:
    async with running_processor(nats_settings, mongo_settings):
        for p in range(PARTITIONS):
            await js.delete_consumer(topology.STREAM, topology.consumer_name(p))
        published = await publish(js, ["p-after-delete", "another"], 3)
        docs = await wait_for_documents(mongo_settings, len(published.events), timeout=30)
    check_exactly_once_in_order(published, docs)


async def test_drain_finishes_running_events_and_hands_back_queued_ones(
    nats_settings: NatsSettings, mongo_settings: MongoSettings, js: JetStreamContext
) -> None:
    recorder = Recorder(delay_ms=(600, 900))
    processor = Processor(
        fast_settings(),
        nats_settings,
        StreamSettings(partitions=PARTITIONS),
        mongo_settings,
        handler=recorder,
    )
    await processor.start()
    try:
        published = await publish(js, [f"drain-{i}" for i in range(8)], 3)
        # Every patient's first event running, the other two queued behind it.
        while processor.lanes is None or processor.lanes.held < 24 or len(recorder.running) < 8:
            await asyncio.sleep(0.02)
        await processor.drain(5.0)
        metrics = render(processor.metrics.registry).decode()
    finally:
        await processor.close()
    released = [m for m in metrics.splitlines() if m.startswith("medevents_processor_released_total")]
    assert released == ["medevents_processor_released_total 16.0"]  # the queued second and third events
    assert len(await stored_documents(mongo_settings)) == 8  # the running ones finished and were stored
    async with running_processor(nats_settings, mongo_settings, handler=recorder):
        docs = await wait_for_documents(mongo_settings, len(published.events))
    check_exactly_once_in_order(published, docs)
    assert recorder.overlaps == []


async def test_a_full_pod_of_waiting_events_still_pulls_the_redelivery_they_wait_for(
    nats_settings: NatsSettings, mongo_settings: MongoSettings, js: JetStreamContext
) -> None:
    """A pod full of events that wait for an earlier one held by a dead pod must still pull, or
    JetStream can never redeliver that earlier event to anyone: a deadlock."""
    await ensure_stream(js, StreamSettings(partitions=PARTITIONS))
    partition = partition_of(patient_token("stuck"), PARTITIONS)
    for p in range(PARTITIONS):
        await js.add_consumer(topology.STREAM, topology.consumer_config(p, ack_wait_s=5, max_ack_pending=512))
    published = await publish(js, ["stuck"], 6)
    dead_pod = await js.pull_subscribe_bind(durable=topology.consumer_name(partition), stream=topology.STREAM)
    taken = await dead_pod.fetch(1, timeout=5)  # the first event, never acknowledged
    assert taken[0].headers and taken[0].headers["Nats-Msg-Id"] == "e-stuck-0"
    await dead_pod.unsubscribe()
    async with running_processor(nats_settings, mongo_settings, fast_settings(concurrency=2)) as processor:
        docs = await wait_for_documents(mongo_settings, 6, timeout=30)
        stalls = processor.metrics.stall_fetches._value.get()
    check_exactly_once_in_order(published, docs)
    assert stalls > 0
