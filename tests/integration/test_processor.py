"""The processor against real nats-server and Mongo-wire servers: the old demo's scenarios."""

from __future__ import annotations

from nats.js import JetStreamContext

from medevents.config import MongoSettings, NatsSettings

from .processor_support import (
    Recorder,
    check_exactly_once_in_order,
    publish,
    running_processor,
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
