"""Duplicate storm at the door: the same 100 events posted 50 times each, concurrently, single and
in batches: every post answered 202, each event stored once, exactly one answer per event says it
was new."""

from __future__ import annotations

import asyncio
import collections
import random

import msgspec
from nats.js import JetStreamContext

from .conftest import RunningIngest, stream_messages

JSON = {"Content-Type": "application/json"}


def event(i: int) -> bytes:
    return msgspec.json.encode(
        {"patientId": f"p-{i % 10}", "type": "vitals", "data": {"i": i}, "ts": "2025-10-01T10:30:00Z"}
    )


async def test_duplicate_storm(ingest: RunningIngest, js: JetStreamContext) -> None:
    posts = [i for i in range(100) for _ in range(45)]
    random.Random(7).shuffle(posts)
    answers: list[tuple[str, bool]] = []
    gate = asyncio.Semaphore(64)

    async def post(i: int) -> None:
        async with gate:
            response = await ingest.client.post("/events", content=event(i), headers=JSON)
        assert response.status_code == 202, response.text
        answers.append((response.json()["eventId"], response.json()["duplicate"]))

    async def batch(start: int) -> None:
        items = b"[" + b",".join(event(i) for i in range(start, start + 20)) + b"]"
        async with gate:
            response = await ingest.client.post("/events/batch", content=items, headers=JSON)
        assert response.status_code == 202, response.text
        answers.extend((item["eventId"], item["duplicate"]) for item in response.json()["items"])

    await asyncio.gather(*(post(i) for i in posts), *(batch(s) for s in range(0, 100, 20) for _ in range(5)))

    assert len(answers) == 100 * 50
    new = collections.Counter(event_id for event_id, duplicate in answers if not duplicate)
    assert len(new) == 100 and set(new.values()) == {1}, "exactly one answer per event says it was new"
    stored = [headers["Nats-Msg-Id"] for _, _, _, headers in await stream_messages(js)]
    assert sorted(stored) == sorted(new)
