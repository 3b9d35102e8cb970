"""Reading a patient back through the API, against real nats-server, Mongo-wire server and
processor: the timeline in processing order, its pages (stable while events arrive), filters,
awkward patient ids, the summary and its pending count, auth and rate limit, and the indexes."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Any

import msgspec
import pytest
from nats.js import JetStreamContext
from pymongo import ASCENDING, AsyncMongoClient

from medevents import store
from medevents.config import MongoSettings, NatsSettings
from medevents.ingest import patients
from medevents.ingest.wire import ProcessedEvent
from medevents.local import EmbeddedNats
from medevents.model import Event
from medevents.processor import HandlerContext, HandlerResult, PermanentError
from medevents.store import Document
from medevents.subjects import patient_token, token_of_stored
from medevents.timeline import patient_path

from .conftest import RunningIngest, running_ingest, stream_messages
from .processor_support import running_processor

JSON = {"Content-Type": "application/json"}
T0 = dt.datetime(2025, 10, 1, 10, 0, tzinfo=dt.UTC)


def event(patient: str, n: int, *, kind: str = "vitals", ts: dt.datetime | None = None) -> dict[str, Any]:
    return {
        "patientId": patient,
        "type": kind,
        "data": {"sequence": n},
        "ts": (ts or T0 + dt.timedelta(minutes=n)).isoformat(),
    }


async def post(ingest: RunningIngest, body: dict[str, Any]) -> str:
    response = await ingest.client.post("/events", content=msgspec.json.encode(body), headers=JSON)
    assert response.status_code == 202, response.text
    event_id: str = response.json()["eventId"]
    return event_id


async def get(ingest: RunningIngest, path: str, **params: Any) -> Any:
    response = await ingest.client.get(path, params=params or None)
    assert response.status_code == 200, response.text
    return response.json()


async def summary(ingest: RunningIngest, patient: str) -> dict[str, Any]:
    body: dict[str, Any] = await get(ingest, patient_path(patient))
    return body


async def pages(ingest: RunningIngest, patient: str, **params: Any) -> list[dict[str, Any]]:
    """Every page of the timeline, following ``next``."""
    found = [await get(ingest, patient_path(patient) + "/events", **params)]
    while found[-1]["next"] is not None:
        found.append(await get(ingest, found[-1]["next"]))
    return found


async def timeline(ingest: RunningIngest, patient: str, **params: Any) -> list[dict[str, Any]]:
    return [e for page in await pages(ingest, patient, **params) for e in page["events"]]


async def wait_processed(
    ingest: RunningIngest, patient: str, stored: int, timeout: float = 60
) -> dict[str, Any]:
    """The summary once ``stored`` events are in MongoDB and none is pending."""
    deadline = time.monotonic() + timeout
    while True:
        current = await summary(ingest, patient)
        if current["stored"] >= stored and current["pending"] == 0:
            return current
        assert time.monotonic() < deadline, current
        await asyncio.sleep(0.1)


async def test_the_old_demo_ordering_example_reads_back_in_order(
    ingest: RunningIngest, nats_settings: NatsSettings, mongo_settings: MongoSettings
) -> None:
    first = await post(ingest, {**event("patient-456", 1), "ts": "2025-10-01T10:00:00Z"})
    second = await post(ingest, {**event("patient-456", 2), "ts": "2025-10-01T10:05:00Z"})
    async with running_processor(nats_settings, mongo_settings):
        done = await wait_processed(ingest, "patient-456", 2)
    events = await timeline(ingest, "patient-456")
    assert [e["eventId"] for e in events] == [first, second]
    assert [e["data"] for e in events] == [{"sequence": 1}, {"sequence": 2}]
    assert events[0]["sequence"] < events[1]["sequence"]
    started, finished = (
        dt.datetime.fromisoformat(events[i][k]) for i, k in ((1, "startedAt"), (0, "processedAt"))
    )
    assert started >= finished  # the second waited for the first
    old_demo = {"eventId", "patientId", "type", "data", "ts", "processedAt", "processingDurationMs",
                "result", "createdAt", "updatedAt"}  # fmt: skip
    assert old_demo | {"status", "sequence"} <= events[0].keys()
    assert events[0]["status"] == "processed" and events[0]["result"]["status"] == "success"
    for shown in events:  # the processor's documents have the shape the OpenAPI document promises
        msgspec.convert(shown, ProcessedEvent)
    assert events[0]["ts"] == "2025-10-01T10:00:00Z"
    # The same document as GET /events/{id} answers.
    assert await get(ingest, f"/events/{second}") == events[1]
    assert done == {
        "patientId": "patient-456",
        "stored": 2,
        "failed": 0,
        "pending": 0,
        "lastEventId": second,
        "lastSequence": events[1]["sequence"],
        "lastProcessedAt": events[1]["processedAt"],
    }


async def test_pages_are_stable_while_events_arrive(
    ingest: RunningIngest, nats_settings: NatsSettings, mongo_settings: MongoSettings
) -> None:
    async with running_processor(nats_settings, mongo_settings):
        for n in range(30):
            await post(ingest, event("paged", n))
            await post(ingest, event("other", n))
        await wait_processed(ingest, "paged", 30)

        async def arrive() -> None:
            for n in range(30, 50):
                await post(ingest, event("paged", n))
                await asyncio.sleep(0.02)

        arriving = asyncio.create_task(arrive())
        seen: list[dict[str, Any]] = []
        page = await get(ingest, patient_path("paged") + "/events", limit=7)
        while True:
            assert len(page["events"]) <= 7
            seen += page["events"]
            if page["next"] is not None:
                await asyncio.sleep(0.05)  # let events arrive between pages
                page = await get(ingest, page["next"])
            elif len(seen) < 50:
                await asyncio.sleep(0.1)  # caught up: poll from the cursor, as --follow does
                page = await get(ingest, patient_path("paged") + "/events", after=page["cursor"], limit=7)
            else:
                break
        await arriving
    full = await get(ingest, patient_path("paged") + "/events", limit=1000)
    assert full["next"] is None and len(full["events"]) == 50
    assert seen == full["events"]  # nothing skipped, nothing twice, the same order
    assert [e["data"]["sequence"] for e in seen] == list(range(50))
    sequences = [e["sequence"] for e in seen]
    assert sequences == sorted(sequences)
    assert full["cursor"] == sequences[-1]
    assert (await get(ingest, patient_path("paged") + "/events", after=full["cursor"]))["events"] == []


async def test_filters_on_type_and_time(
    ingest: RunningIngest,
    nats_settings: NatsSettings,
    mongo_settings: MongoSettings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plus2 = dt.timezone(dt.timedelta(hours=2))
    for n in range(12):
        ts = (T0 + dt.timedelta(minutes=n)).astimezone(plus2 if n % 2 else dt.UTC)
        await post(ingest, event("filtered", n, kind="labs" if n % 3 == 0 else "vitals", ts=ts))
    async with running_processor(nats_settings, mongo_settings):
        await wait_processed(ingest, "filtered", 12)

    def numbers(events: list[dict[str, Any]]) -> list[int]:
        return [e["data"]["sequence"] for e in events]

    assert numbers(await timeline(ingest, "filtered", type="labs")) == [0, 3, 6, 9]
    since, until = T0 + dt.timedelta(minutes=2), T0 + dt.timedelta(minutes=8)
    window = {"since": since.isoformat(), "until": until.isoformat()}
    assert numbers(await timeline(ingest, "filtered", **window)) == [2, 3, 4, 5, 6, 7]  # half-open
    assert numbers(await timeline(ingest, "filtered", type="vitals", **window)) == [2, 4, 5, 7]
    # The same instant with another offset (httpx sends `+` as %2B).
    shifted = {"since": since.astimezone(plus2).isoformat(), "until": until.astimezone(plus2).isoformat()}
    assert numbers(await timeline(ingest, "filtered", **shifted)) == [2, 3, 4, 5, 6, 7]
    two = await pages(ingest, "filtered", type="vitals", limit=2)
    assert [len(p["events"]) for p in two] == [2, 2, 2, 2]
    assert two[1]["next"] is not None and "type=vitals" in two[1]["next"]
    assert numbers([e for p in two for e in p["events"]]) == [1, 2, 4, 5, 7, 8, 10, 11]
    assert await timeline(ingest, "filtered", type="imaging") == []
    assert await timeline(ingest, "filtered", since=until.isoformat(), until=since.isoformat()) == []

    # A filtered page examines a bounded number of documents and then says where to go on.
    monkeypatch.setattr(patients, "SCAN_BUDGET", 4)
    bounded = await pages(ingest, "filtered", type="labs", limit=10)
    assert [len(p["events"]) for p in bounded] == [2, 1, 1, 0]  # 4 documents each, then the end
    assert numbers([e for p in bounded for e in p["events"]]) == [0, 3, 6, 9]


async def test_bad_parameters_are_problems_naming_them(ingest: RunningIngest) -> None:
    base = patient_path("p") + "/events"
    cases = [
        (base + "?after=-1", "after"),
        (base + "?limit=100000", "limit"),
        (base + "?since=2025-10-01", "since"),
        (base + "?since=2025-10-01T10:00:00+02:00", "since"),  # `+` unencoded: a space
        (base + "?typo=1", "typo"),
        (base + "?type=a&type=b", "type"),
        (patient_path("p") + "?limit=5", "limit"),  # the summary takes no parameters
        ("/patients/%FF/events", "patientId"),
        ("/patients/a%07b", "patientId"),
        ("/patients/a%0Ab", "patientId"),
        ("/patients//events", "patientId"),
    ]
    for path, field in cases:
        response = await ingest.client.get(path)
        assert response.status_code == 400, (path, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        body = response.json()
        assert body["field"] == field and body["type"] == "urn:medevents:problem:invalid-parameter", body
    assert "%2B" in (await ingest.client.get(cases[3][0])).json()["detail"]
    for path in ("/patients/a/b", "/patients/a/events/x"):
        response = await ingest.client.get(path)
        assert response.status_code == 404 and response.headers["content-type"] == "application/problem+json"
    assert (await ingest.client.post(base)).status_code == 405


AWKWARD = ["2.16.840.1.113883", "a/b", "with space", "*", ">", "a%2Fb", "Zoë Müller", "患者 🙂",
           "events", "patients", ".", "..", "?#&=+"]  # fmt: skip


async def test_awkward_patient_ids(
    ingest: RunningIngest, nats_settings: NatsSettings, mongo_settings: MongoSettings
) -> None:
    ids = {pid: [await post(ingest, event(pid, n)) for n in range(2)] for pid in AWKWARD}
    async with running_processor(nats_settings, mongo_settings):
        for pid in AWKWARD:
            done = await wait_processed(ingest, pid, 2)
            assert done["patientId"] == pid and done["stored"] == 2 and done["lastEventId"] == ids[pid][1]
    for pid in AWKWARD:
        events = await timeline(ingest, pid)
        assert [e["eventId"] for e in events] == ids[pid], pid
        assert {e["patientId"] for e in events} == {pid}
        one = await pages(ingest, pid, limit=1)  # next links keep the id intact
        assert [p["events"][0]["eventId"] for p in one if p["events"]] == ids[pid]


async def test_pending_counts_the_patients_waiting_events_after_its_watermark(
    ingest: RunningIngest, nats_settings: NatsSettings, mongo_settings: MongoSettings, js: JetStreamContext
) -> None:
    awkward, plain = "2.16.840.1 *>", "plain-patient"
    for n in range(3):
        await post(ingest, event(awkward, n))
    for n in range(2):
        await post(ingest, event(plain, n))
    assert (await summary(ingest, awkward)) == {
        "patientId": awkward,
        "stored": 0,
        "failed": 0,
        "pending": 3,
        "lastEventId": None,
        "lastSequence": None,
        "lastProcessedAt": None,
    }
    assert (await summary(ingest, plain))["pending"] == 2
    assert (await summary(ingest, "nobody"))["pending"] == 0

    # Applied but not yet acknowledged: still in the stream, at or below the watermark.
    sequences = [seq for seq, subject, _, _ in await stream_messages(js)
                 if token_of_stored(subject)[1] == patient_token(awkward)]  # fmt: skip
    client: AsyncMongoClient[Document] = store.mongo_client(mongo_settings, "test")
    try:
        marks = store.watermarks(store.database(client, mongo_settings))
        for applied, pending in ((1, 2), (2, 1), (3, 0), (1, 2)):
            await marks.update_one(
                {"_id": patient_token(awkward)}, {"$set": {"seq": sequences[applied - 1]}}, upsert=True
            )
            assert (await summary(ingest, awkward))["pending"] == pending, applied
    finally:
        await client.close()

    async with running_processor(nats_settings, mongo_settings):
        done = await wait_processed(ingest, awkward, 2)
        assert (await wait_processed(ingest, plain, 2))["stored"] == 2
    # The first event counts as applied (the watermark said so); the processor stored the others.
    assert done["stored"] == 2 and done["lastSequence"] == sequences[2]
    assert [e["sequence"] for e in await timeline(ingest, awkward)] == sequences[1:]


async def test_failed_events_in_the_timeline_and_the_summary(
    ingest: RunningIngest, nats_settings: NatsSettings, mongo_settings: MongoSettings
) -> None:
    async def picky(event: Event, context: HandlerContext) -> HandlerResult:
        if event.type == "unreadable":
            raise PermanentError("cannot read this device")
        return HandlerResult()

    ids = [
        await post(ingest, event("failing", n, kind="unreadable" if n == 1 else "vitals")) for n in range(3)
    ]
    async with running_processor(nats_settings, mongo_settings, handler=picky):
        done = await wait_processed(ingest, "failing", 3)
    assert (done["stored"], done["failed"], done["lastEventId"]) == (3, 1, ids[2])
    events = await timeline(ingest, "failing")
    assert [e["status"] for e in events] == ["processed", "failed", "processed"]
    assert "cannot read this device" in events[1]["result"]["message"]


async def test_auth_and_rate_limit_guard_the_patient_routes(
    nats_settings: NatsSettings, mongo_settings: MongoSettings
) -> None:
    paths = [patient_path("a/b") + "/events", patient_path("a/b")]
    async with running_ingest(nats_settings, mongo_settings, auth_tokens="reader-token") as ingest:
        for path in paths:
            for headers in ({}, {"Authorization": "Bearer wrong"}):
                response = await ingest.client.get(path, headers=headers)
                assert response.status_code == 401 and response.headers["www-authenticate"].startswith(
                    "Bearer"
                )
                assert response.headers["content-type"] == "application/problem+json"
            # Even a malformed request is refused before it is read.
            assert (await ingest.client.get(path + "?limit=0")).status_code == 401
            ok = await ingest.client.get(path, headers={"Authorization": "Bearer reader-token"})
            assert ok.status_code == 200, ok.text
    throttled = {"rate_limit_per_s": 0.01, "rate_limit_burst": 2}
    async with running_ingest(nats_settings, mongo_settings, **throttled) as ingest:
        statuses = [(await ingest.client.get(paths[i % 2])).status_code for i in range(3)]
        assert statuses == [200, 200, 429]
        limited = await ingest.client.get(paths[0])
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1


async def test_without_nats_the_summary_is_503_and_the_timeline_still_answers(
    ingest: RunningIngest, nats_server: EmbeddedNats
) -> None:
    nats_server.stop()
    response = await ingest.client.get(patient_path("patient-456"))
    assert response.status_code == 503 and response.headers["retry-after"]
    assert response.headers["content-type"] == "application/problem+json"
    assert (await ingest.client.get(patient_path("patient-456") + "/events")).status_code == 200


async def test_indexes_make_the_reads_index_walks(mongo_settings: MongoSettings) -> None:
    client: AsyncMongoClient[Document] = store.mongo_client(mongo_settings, "test")
    try:
        db = store.database(client, mongo_settings)
        events = store.processed_events(db)
        await events.create_index([("patientId", ASCENDING)], name="patientId")  # an earlier version's
        await store.ensure_indexes(db)
        await store.ensure_indexes(db)  # idempotent
        names = set(await events.index_information())
        assert names == {"_id_", "eventId_unique", "patientId_ts", store.TIMELINE_INDEX}
        await events.insert_many(
            [
                {"eventId": f"e{i}", "patientId": f"p{i % 3}", "sequence": i, "result": {"status": "success"}}
                for i in range(1, 60)
            ]
        )
        page = events.find({"patientId": "p1", "sequence": {"$gt": 10}}).sort("sequence", 1).limit(5)
        last = events.find({"patientId": "p1", "sequence": {"$gte": 58}}).sort("sequence", -1).limit(1)
        for cursor in (page, last):
            plan = msgspec.json.encode((await cursor.explain())["queryPlanner"]["winningPlan"]).decode()
            assert '"stage":"IXSCAN"' in plan and f'"indexName":"{store.TIMELINE_INDEX}"' in plan, plan
            assert '"stage":"COLLSCAN"' not in plan
    finally:
        await client.close()
