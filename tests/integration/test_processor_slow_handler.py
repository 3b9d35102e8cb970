"""A handler slower than ack_wait: in_progress() heartbeats keep its events from being redelivered."""

from __future__ import annotations

from nats.js import JetStreamContext

from medevents import topology
from medevents.config import MongoSettings, NatsSettings

from .processor_support import (
    PARTITIONS,
    Recorder,
    check_exactly_once_in_order,
    fast_settings,
    publish,
    running_processor,
    wait_for_documents,
)


async def test_handler_three_times_longer_than_ack_wait_is_not_redelivered(
    nats_settings: NatsSettings, mongo_settings: MongoSettings, js: JetStreamContext
) -> None:
    recorder = Recorder(delay_ms=(3000, 3000))
    settings = fast_settings(ack_wait_s=1.0)
    async with running_processor(nats_settings, mongo_settings, settings, handler=recorder):
        published = await publish(js, ["slow-a", "slow-b", "slow-c"], 2)
        docs = await wait_for_documents(mongo_settings, len(published.events))
        redelivered = 0
        for partition in range(PARTITIONS):
            info = await js.consumer_info(topology.STREAM, topology.consumer_name(partition))
            redelivered += info.num_redelivered or 0
    check_exactly_once_in_order(published, docs)
    assert redelivered == 0, "heartbeats should have kept every held event with its processor"
    assert len(recorder.runs) == len(published.events), "each event ran once"
    assert {doc["attempts"] for doc in docs} == {1}
    assert recorder.overlaps == []
