"""The fence's store side against the real Mongo-wire server: a patient's first watermark is
inserted (it wins exactly when none exists, as the upsert it replaces), later ones are conditional
updates, and every lost compare-and-set is reported with the watermark as it now is. Writers race
here through two stores, as two pods would."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from medevents import store
from medevents.config import MongoSettings
from medevents.processor.writer import ApplyOutcome, ApplyResult, EventStore, WriteRequest
from medevents.store import Document

pytestmark = pytest.mark.integration


@pytest.fixture
async def db(mongo_settings: MongoSettings) -> AsyncIterator[Any]:
    client = store.mongo_client(mongo_settings, "test-watermarks")
    database = store.database(client, mongo_settings)
    await store.ensure_indexes(database)
    yield database
    await client.close()


def request(token: str, expected: int, sequence: int) -> WriteRequest:
    document: Document = {"eventId": f"{token}-{sequence}", "patientId": token, "sequence": sequence}
    return WriteRequest(document, token, expected, sequence)


async def apply_all(db: Any, requests: list[WriteRequest]) -> list[ApplyResult]:
    """One batch: every request waits in the same write window."""
    events = EventStore(db, max_batch=256, write_window_s=0.05, read_window_s=0.002)
    try:
        return list(await asyncio.gather(*(events.apply(r) for r in requests)))
    finally:
        await events.close()


async def watermark(db: Any, token: str) -> int:
    doc = await store.watermarks(db).find_one({"_id": token})
    return 0 if doc is None else int(doc["seq"])


async def test_first_and_later_watermarks_in_one_batch(db: Any) -> None:
    assert [r.outcome for r in await apply_all(db, [request("a", 0, 5), request("b", 0, 7)])] == [
        ApplyOutcome.APPLIED,
        ApplyOutcome.APPLIED,
    ]
    results = await apply_all(db, [request("a", 5, 9), request("b", 7, 8), request("c", 0, 3)])
    assert [(r.outcome, r.watermark) for r in results] == [(ApplyOutcome.APPLIED, s) for s in (9, 8, 3)]
    assert [await watermark(db, t) for t in "abc"] == [9, 8, 3]


async def test_a_first_watermark_that_exists_already_loses(db: Any) -> None:
    """Another pod applied the patient's first event meanwhile: the insert is a duplicate key,
    reported as lost (or already applied) with the watermark now stored, not as an error."""
    await apply_all(db, [request("p", 0, 10)])
    results = await apply_all(db, [request("p", 0, 12), request("p2", 0, 4), request("q", 0, 1)])
    lost, p2, q = results
    assert (lost.outcome, lost.watermark) == (ApplyOutcome.LOST, 10)
    assert (p2.outcome, q.outcome) == (ApplyOutcome.APPLIED, ApplyOutcome.APPLIED)
    behind = (await apply_all(db, [request("p", 0, 6)]))[0]
    assert (behind.outcome, behind.watermark) == (ApplyOutcome.ALREADY, 10)
    assert await watermark(db, "p") == 10


async def test_a_stale_update_loses(db: Any) -> None:
    await apply_all(db, [request("s", 0, 2)])
    await apply_all(db, [request("s", 2, 5)])
    stale = (await apply_all(db, [request("s", 2, 7), request("t", 0, 1)]))[0]
    assert (stale.outcome, stale.watermark) == (ApplyOutcome.LOST, 5)
    assert await watermark(db, "s") == 5


async def test_two_writers_racing_on_new_patients(db: Any) -> None:
    """Two stores (two pods) apply different events of the same fresh patients at once: exactly
    one wins each patient, the other learns the winner's watermark."""
    tokens = [f"r{n}" for n in range(40)]
    one, two = await asyncio.gather(
        apply_all(db, [request(t, 0, 100) for t in tokens]),
        apply_all(db, [request(t, 0, 200) for t in tokens]),
    )
    for token, a, b in zip(tokens, one, two, strict=True):
        winners = [r for r in (a, b) if r.outcome is ApplyOutcome.APPLIED]
        assert len(winners) == 1, (token, a, b)
        stored = await watermark(db, token)
        assert stored == winners[0].watermark
        loser = b if winners[0] is a else a
        assert loser.watermark == stored
        assert loser.outcome in (ApplyOutcome.LOST, ApplyOutcome.ALREADY)
