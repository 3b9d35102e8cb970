"""Ingest's group commit against a real nats-server: events that wait together go out as one
JetStream atomic batch, and every event still gets its own, right answer: duplicates (an event the
stream already has refuses the whole batch), an id twice in one group, a stream without
``allow_atomic``, and POST /events/batch retried whole."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import msgspec
import pytest
from nats.js import JetStreamContext

from medevents import topology
from medevents.config import IngestSettings, MongoSettings, NatsSettings, StreamSettings
from medevents.ingest._metrics import IngestMetrics
from medevents.ingest.publisher import MIN_BATCH, Publisher

from .conftest import running_ingest

pytestmark = pytest.mark.integration


def batched_events(metrics: IngestMetrics) -> float:
    """Events that went out in atomic batches (the batch-size histogram, less its 1s)."""
    total = ones = 0.0
    for metric in metrics.registry.collect():
        if metric.name != "medevents_ingest_publish_batch_events":
            continue
        for sample in metric.samples:
            if sample.name.endswith("_sum"):
                total = sample.value
            elif sample.name.endswith("_bucket") and sample.labels["le"] == "1.0":
                ones = sample.value
    return total - ones


@pytest.fixture
async def publisher(nats_settings: NatsSettings) -> AsyncIterator[tuple[Publisher, IngestMetrics]]:
    metrics = IngestMetrics()
    pub = Publisher(nats_settings, StreamSettings(partitions=4), IngestSettings(), metrics)
    await pub.start()
    yield pub, metrics
    await pub.close()


async def stored_ids(js: JetStreamContext) -> list[str]:
    info = await js.stream_info(topology.STREAM)
    ids = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(topology.STREAM, seq)
        ids.append((msg.headers or {})["Nats-Msg-Id"])
    return ids


async def publish_all(pub: Publisher, ids: list[str]) -> list[bool]:
    """Publish every id at once (they wait together, so they go out grouped)."""
    return list(await asyncio.gather(*(pub.publish(f"events.p-{i}", b"{}", i) for i in ids)))


async def test_events_waiting_together_go_out_as_one_batch(
    publisher: tuple[Publisher, IngestMetrics], js: JetStreamContext
) -> None:
    pub, metrics = publisher
    assert pub.atomic
    ids = [f"e-{n}" for n in range(200)]
    assert await publish_all(pub, ids) == [False] * 200
    assert batched_events(metrics) >= 200 - 2 * MIN_BATCH  # all but the first sends
    assert sorted(await stored_ids(js)) == sorted(ids)


async def test_a_batch_holding_a_stored_event_is_sent_again_one_by_one(
    publisher: tuple[Publisher, IngestMetrics], js: JetStreamContext
) -> None:
    """JetStream refuses a whole atomic batch holding an id it already has (10201): nothing of
    it is stored, and each event then gets its own answer."""
    pub, metrics = publisher
    assert await pub.publish("events.p-old", b"{}", "old") is False
    ids = [f"n-{n}" for n in range(50)]
    answers = await publish_all(pub, [*ids[:25], "old", *ids[25:]])
    assert answers == [False] * 25 + [True] + [False] * 25
    assert batched_events(metrics) >= 25  # the refused batch was tried
    stored = await stored_ids(js)
    assert sorted(stored) == sorted(["old", *ids])  # each once


async def test_one_id_twice_in_a_group(
    publisher: tuple[Publisher, IngestMetrics], js: JetStreamContext
) -> None:
    pub, _ = publisher
    ids = [f"t-{n}" for n in range(20)]
    answers = await publish_all(pub, [*ids, "twice", "twice"])
    assert answers[:20] == [False] * 20
    assert sorted(answers[20:]) == [False, True]  # one stored it, the other is its duplicate
    assert sorted(await stored_ids(js)) == sorted([*ids, "twice"])


async def test_a_stream_without_atomic_batches_gets_single_publishes(
    nats_settings: NatsSettings, js: JetStreamContext
) -> None:
    """A stream created before allow_atomic (older medevents, or an operator's own) is not
    changed; events go out one by one."""
    config = topology.stream_config(StreamSettings(partitions=4))
    config.allow_atomic = None
    await js.add_stream(config)
    metrics = IngestMetrics()
    pub = Publisher(nats_settings, StreamSettings(partitions=4), IngestSettings(), metrics)
    await pub.start()
    try:
        assert not pub.atomic
        ids = [f"s-{n}" for n in range(100)]
        assert await publish_all(pub, ids) == [False] * 100
        assert batched_events(metrics) == 0
    finally:
        await pub.close()
    assert sorted(await stored_ids(js)) == sorted(ids)


async def test_batch_endpoint_retried_whole(
    nats_settings: NatsSettings, mongo_settings: MongoSettings, js: JetStreamContext
) -> None:
    """A client retries a POST /events/batch of 100 events: the first answer queues all 100, the
    retry answers every one as a duplicate (its atomic batches are refused and re-sent one by
    one) and the stream holds each event once."""
    events = [
        {"patientId": f"p-{n % 7}", "type": "vitals", "data": {"n": n}, "ts": "2025-10-01T10:30:00Z"}
        for n in range(100)
    ]
    async with running_ingest(nats_settings, mongo_settings) as ingest:
        first = await ingest.client.post("/events/batch", json=events)
        again = await ingest.client.post("/events/batch", json=events)
    assert first.status_code == 202, first.text
    assert again.status_code == 202, again.text
    one, two = msgspec.json.decode(first.content), msgspec.json.decode(again.content)
    assert [i["duplicate"] for i in one["items"]] == [False] * 100
    assert [i["duplicate"] for i in two["items"]] == [True] * 100
    assert [i["eventId"] for i in one["items"]] == [i["eventId"] for i in two["items"]]
    stored = await stored_ids(js)
    assert sorted(stored) == sorted(i["eventId"] for i in one["items"])
