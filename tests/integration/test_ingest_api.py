"""The ingest API against a real nats-server: the old demo's README scenarios and every error."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest
from nats.js import JetStreamContext

from medevents import store
from medevents.config import IngestSettings, MongoSettings, NatsSettings, StreamSettings
from medevents.local import free_port
from medevents.subjects import partition_of, patient_id, patient_token, token_of_stored

from .conftest import RunningIngest, start_ingest, stream_messages

EVENT: dict[str, Any] = {
    "patientId": "patient-123",
    "type": "vitals",
    "data": {"heartRate": 72},
    "ts": "2025-10-01T10:30:00Z",
}
JSON = {"Content-Type": "application/json"}


async def post(ingest: RunningIngest, event: dict[str, Any], **headers: str) -> Any:
    return await ingest.client.post(
        "/events", content=msgspec.json.encode(event), headers={**JSON, **headers}
    )


async def test_health_is_the_old_demo_shape(ingest: RunningIngest) -> None:
    response = await ingest.client.get("/health")
    assert response.status_code == 200
    assert response.content == b'{"status":"ok","service":"ingest-service"}'
    assert (await ingest.client.get("/livez")).status_code == 200
    assert (await ingest.client.get("/readyz")).json() == {"status": "ready"}


async def test_same_event_twice_is_stored_once(ingest: RunningIngest, js: JetStreamContext) -> None:
    first = await post(ingest, EVENT)
    second = await post(ingest, EVENT)
    assert first.status_code == second.status_code == 202
    assert first.json()["duplicate"] is False
    assert second.json() == {"status": "queued", "eventId": first.json()["eventId"], "duplicate": True}
    messages = await stream_messages(js)
    assert len(messages) == 1
    assert messages[0][3]["Nats-Msg-Id"] == first.json()["eventId"]


async def test_client_id_and_idempotency_key(ingest: RunningIngest, js: JetStreamContext) -> None:
    a = await post(ingest, {**EVENT, "eventId": "client-1"})
    b = await post(ingest, {**EVENT, "data": {"heartRate": 73}, "eventId": "client-1"})
    c = await post(ingest, {**EVENT, "data": {"x": 1}}, **{"Idempotency-Key": "key-1"})
    d = await post(ingest, {**EVENT, "data": {"x": 2}}, **{"Idempotency-Key": "key-1"})
    assert [r.json()["eventId"] for r in (a, b, c, d)] == ["client-1", "client-1", "key-1", "key-1"]
    assert [r.json()["duplicate"] for r in (a, b, c, d)] == [False, True, False, True]
    assert len(await stream_messages(js)) == 2


async def test_one_patients_events_land_in_post_order(ingest: RunningIngest, js: JetStreamContext) -> None:
    ids = [(await post(ingest, {**EVENT, "data": {"sequence": i}})).json()["eventId"] for i in range(20)]
    messages = await stream_messages(js)
    assert [m[3]["Nats-Msg-Id"] for m in messages] == ids
    assert [msgspec.json.decode(m[2])["data"]["sequence"] for m in messages] == list(range(20))


async def test_thousand_posts_from_ten_clients(ingest: RunningIngest, js: JetStreamContext) -> None:
    async def client(c: int) -> list[int]:
        return [
            (await post(ingest, {**EVENT, "patientId": f"p-{c}", "data": {"i": i}})).status_code
            for i in range(100)
        ]

    statuses = [s for batch in await asyncio.gather(*(client(c) for c in range(10))) for s in batch]
    assert statuses == [202] * 1000
    info = await js.stream_info("EVENTS")
    assert info.state.messages == 1000


@pytest.mark.parametrize(
    "pid", ["2.16.840.1.113883", "a*b", "a>b", "with space", "Zoë 病人", "x" * 256, "~x", "tab-free_id"]
)
async def test_awkward_patient_ids_round_trip(ingest: RunningIngest, js: JetStreamContext, pid: str) -> None:
    response = await post(ingest, {**EVENT, "patientId": pid})
    assert response.status_code == 202, response.text
    [(_, subject, payload, _)] = await stream_messages(js)
    partition, token = token_of_stored(subject)
    assert patient_id(token) == pid == msgspec.json.decode(payload)["patientId"]
    assert partition == partition_of(patient_token(pid), 4), "client-side partition matches the server's"


async def test_errors_are_problem_documents(ingest: RunningIngest, js: JetStreamContext) -> None:
    cases: list[tuple[Any, int, str | None]] = [
        (ingest.client.post("/events", content=b"{not json", headers=JSON), 400, None),
        (ingest.client.post("/events", content=b'{"patientId":', headers=JSON), 400, None),
        (ingest.client.post("/events", content=b"\xff\xfe", headers=JSON), 400, None),
        (
            ingest.client.post(
                "/events", content=msgspec.json.encode(EVENT), headers={"Content-Type": "text/plain"}
            ),
            415,
            None,
        ),
        (ingest.client.post("/events", content=msgspec.json.encode(EVENT)), 415, None),
        (ingest.client.post("/events", content=b" " * 300_000, headers=JSON), 413, None),
        (post(ingest, {**EVENT, "patientId": ""}), 422, "patientId"),
        (post(ingest, {**EVENT, "ts": "2025-10-01T10:30:00"}), 422, "ts"),
        (post(ingest, {k: v for k, v in EVENT.items() if k != "type"}), 422, "type"),
        (post(ingest, {**EVENT, "extra": 1}), 422, "extra"),
        (post(ingest, {**EVENT, "data": {"v": [1, 2**64]}}), 422, "data.v[1]"),
        (post(ingest, EVENT, **{"Idempotency-Key": "has space"}), 422, "Idempotency-Key"),
        (ingest.client.get("/nowhere"), 404, None),
        (ingest.client.delete("/events"), 405, None),
    ]
    for request, status, field in cases:
        response = await request
        assert response.status_code == status, (status, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["status"] == status
        assert problem["type"].startswith("urn:medevents:problem:")
        assert problem["title"] and problem["detail"]
        if field is not None:
            assert problem["field"] == field, problem
    info = await js.stream_info("EVENTS")
    assert info.state.messages == 0, "a rejected request publishes nothing"


async def test_batch_answers_per_item(ingest: RunningIngest, js: JetStreamContext) -> None:
    items = [EVENT, {**EVENT, "type": ""}, {**EVENT, "data": {"n": 2}}, EVENT]
    response = await ingest.client.post("/events/batch", content=msgspec.json.encode(items), headers=JSON)
    assert response.status_code == 207
    result = response.json()
    assert (result["status"], result["accepted"], result["rejected"]) == ("partial", 3, 1)
    assert [i["status"] for i in result["items"]] == ["queued", "error", "queued", "queued"]
    assert result["items"][1]["error"]["field"] == "type"
    assert sorted(i.get("duplicate") for i in result["items"] if i["status"] == "queued") == [
        False,
        False,
        True,
    ]
    ndjson = b"\n".join(msgspec.json.encode({**EVENT, "data": {"n": n}}) for n in range(10, 15))
    response = await ingest.client.post(
        "/events/batch", content=ndjson, headers={"Content-Type": "application/x-ndjson"}
    )
    assert response.status_code == 202
    assert response.json()["accepted"] == 5
    assert (await js.stream_info("EVENTS")).state.messages == 7


async def test_batch_limit(ingest: RunningIngest) -> None:
    items = [{**EVENT, "data": {"n": n}} for n in range(1001)]
    response = await ingest.client.post("/events/batch", content=msgspec.json.encode(items), headers=JSON)
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"


async def test_get_event_reports_processed_and_failed(
    ingest: RunningIngest, mongo_settings: MongoSettings
) -> None:
    client = store.mongo_client(mongo_settings, "test")
    collection = store.processed_events(store.database(client, mongo_settings))
    await collection.insert_many(
        [
            {
                **EVENT,
                "eventId": "ok-1",
                "result": {"status": "success", "message": "Event processed successfully"},
            },
            {**EVENT, "eventId": "bad-1", "result": {"status": "failed", "message": "boom"}},
        ]
    )
    await client.close()
    ok = await ingest.client.get("/events/ok-1")
    assert (ok.status_code, ok.json()["status"], ok.json()["result"]["status"]) == (
        200,
        "processed",
        "success",
    )
    bad = await ingest.client.get("/events/bad-1")
    assert (bad.status_code, bad.json()["status"]) == (200, "failed")
    unknown = await ingest.client.get("/events/never")
    assert unknown.status_code == 404
    assert unknown.json()["eventStatus"] == "unknown"


async def test_bearer_auth(nats_settings: NatsSettings, mongo_settings: MongoSettings) -> None:
    port = free_port()
    settings = IngestSettings(port=port, auth_tokens="old-token,new-token")
    running, server, task = await start_ingest(nats_settings, mongo_settings, settings)
    try:
        assert (await post(running, EVENT)).status_code == 401
        assert (await post(running, EVENT, Authorization="Bearer wrong")).status_code == 401
        assert (await post(running, EVENT, Authorization="Basic b2xkLXRva2Vu")).status_code == 401
        assert (await post(running, EVENT, Authorization="Bearer old-token")).status_code == 202
        assert (await post(running, EVENT, Authorization="Bearer new-token")).status_code == 202
        for path in ("/health", "/livez", "/readyz", "/metrics"):
            assert (await running.client.get(path)).status_code == 200, path
        response = await post(running, EVENT)
        assert response.headers["www-authenticate"].startswith("Bearer")
    finally:
        await running.client.aclose()
        server.should_exit = True
        await task


async def test_full_stream_answers_503(nats_settings: NatsSettings, mongo_settings: MongoSettings) -> None:
    stream = StreamSettings(partitions=2, max_bytes=4096)
    running, server, task = await start_ingest(nats_settings, mongo_settings, stream=stream)
    try:
        statuses = [
            (await post(running, {**EVENT, "data": {"i": i, "pad": "x" * 200}})).status_code
            for i in range(20)
        ]
        assert 202 in statuses and 503 in statuses
        assert statuses == sorted(statuses), "once full, every later event is refused"
        refused = await post(running, {**EVENT, "data": {"i": 99, "pad": "y" * 200}})
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "2"
        assert "full" in refused.json()["detail"]
    finally:
        await running.client.aclose()
        server.should_exit = True
        await task


async def test_openapi_is_valid_3_1(ingest: RunningIngest) -> None:
    from openapi_spec_validator import validate

    document = (await ingest.client.get("/openapi.json")).json()
    assert document["openapi"] == "3.1.0"
    validate(document)
    assert "Event" in document["components"]["schemas"]


async def test_metrics_count_requests(ingest: RunningIngest) -> None:
    await post(ingest, EVENT)
    await post(ingest, EVENT)
    text = (await ingest.client.get("/metrics")).text
    assert "medevents_ingest_events_accepted_total 1.0" in text
    assert "medevents_ingest_duplicates_total 1.0" in text
