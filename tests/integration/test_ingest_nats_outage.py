"""NATS stopped mid-test: 503 and red readiness meanwhile, recovery by itself, nothing lost."""

from __future__ import annotations

import asyncio

import msgspec
import nats

from medevents.local import EmbeddedNats

from .conftest import RunningIngest

JSON = {"Content-Type": "application/json"}


def event(i: int) -> bytes:
    return msgspec.json.encode(
        {"patientId": f"p-{i % 7}", "type": "vitals", "data": {"i": i}, "ts": "2025-10-01T10:30:00Z"}
    )


async def test_nats_outage_and_recovery(ingest: RunningIngest, nats_server: EmbeddedNats) -> None:
    accepted: set[str] = set()
    for i in range(50):
        response = await ingest.client.post("/events", content=event(i), headers=JSON)
        assert response.status_code == 202
        accepted.add(response.json()["eventId"])

    nats_server.kill()
    await asyncio.sleep(0.3)
    during = await ingest.client.post("/events", content=event(1000), headers=JSON)
    assert during.status_code == 503
    assert during.headers["retry-after"]
    assert during.headers["content-type"] == "application/problem+json"
    ready = await ingest.client.get("/readyz")
    assert ready.status_code == 503
    assert "NATS" in ready.json()["detail"]

    nats_server.start()  # same port, same data directory
    for _ in range(100):
        if (await ingest.client.get("/readyz")).status_code == 200:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("ingest did not become ready again after NATS returned")
    for i in range(50, 100):
        response = await ingest.client.post("/events", content=event(i), headers=JSON)
        assert response.status_code == 202
        accepted.add(response.json()["eventId"])

    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    info = await js.stream_info("EVENTS")
    stored = set()
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg("EVENTS", seq)
        stored.add((msg.headers or {})["Nats-Msg-Id"])
    await nc.close()
    assert accepted <= stored, "every event answered 202 is in the stream after the restart"
