"""Outages mid-load: the Mongo-wire server stopped and restarted, nats-server restarted, and a
processor frozen (SIGSTOP) past its ack wait. Nothing is lost, nothing is stored twice, order holds."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from nats.js import JetStreamContext

from medevents.config import MongoSettings, NatsSettings, StreamSettings
from medevents.local import EmbeddedMongo, EmbeddedNats
from medevents.natsconn import ensure_stream

from .processor_procs import ProcessorFleet
from .processor_support import (
    PARTITIONS,
    Published,
    Recorder,
    check_exactly_once_in_order,
    publish,
    running_processor,
    wait_for_documents,
)

PATIENTS = [f"outage-{i}" for i in range(30)]


async def test_mongo_stopped_and_restarted_mid_load(
    tmp_path: Path, nats_settings: NatsSettings, js: JetStreamContext
) -> None:
    mongo = EmbeddedMongo(tmp_path / "mongo")
    mongo_settings = MongoSettings(uri=mongo.start(), db="outage", timeout_ms=1000)
    recorder = Recorder(delay_ms=(0, 5))
    try:
        async with (
            running_processor(nats_settings, mongo_settings, handler=recorder) as first,
            running_processor(nats_settings, mongo_settings, handler=recorder),
        ):
            published = await publish(js, PATIENTS, 10, prefix="before")
            await asyncio.sleep(0.5)
            await asyncio.to_thread(mongo.stop)
            await publish(js, PATIENTS, 10, published, prefix="during")
            await asyncio.sleep(2)
            reasons = await first.readiness()
            assert any("MongoDB" in r for r in reasons), reasons
            await asyncio.to_thread(mongo.start)
            await publish(js, PATIENTS, 5, published, prefix="after")
            docs = await wait_for_documents(mongo_settings, len(published.events), timeout=90)
            assert await first.readiness() == []
        check_exactly_once_in_order(published, docs)
        assert recorder.overlaps == []
    finally:
        mongo.stop()


async def test_nats_restarted_mid_load(
    nats_server: EmbeddedNats,
    nats_settings: NatsSettings,
    mongo_settings: MongoSettings,
    js: JetStreamContext,
) -> None:
    recorder = Recorder(delay_ms=(0, 5))
    async with (
        running_processor(nats_settings, mongo_settings, handler=recorder),
        running_processor(nats_settings, mongo_settings, handler=recorder),
    ):
        published = await publish(js, PATIENTS, 15, prefix="before")
        await asyncio.sleep(0.3)
        await asyncio.to_thread(nats_server.stop)
        await asyncio.sleep(2)
        await asyncio.to_thread(nats_server.start)
        for _ in range(100):  # the test's own connection reconnects too
            if js._nc.is_connected:
                break
            await asyncio.sleep(0.1)
        await publish(js, PATIENTS, 10, published, prefix="after")
        docs = await wait_for_documents(mongo_settings, len(published.events), timeout=90)
    check_exactly_once_in_order(published, docs)
    assert recorder.overlaps == []


async def test_a_frozen_processor_abandons_its_work_and_the_store_stays_right(
    tmp_path: Path, nats_settings: NatsSettings, mongo_settings: MongoSettings, js: JetStreamContext
) -> None:
    await ensure_stream(js, StreamSettings(partitions=PARTITIONS))
    fleet = ProcessorFleet(tmp_path, nats_settings.url, mongo_settings, delay_ms=(800, 1200))
    try:
        names = [fleet.start(), fleet.start()]
        fleet.wait_ready()
        published = await publish(js, PATIENTS, 4, Published())
        await asyncio.sleep(1.5)
        frozen, healthy = sorted(names, key=lambda n: -fleet.metric(n, "medevents_processor_in_flight"))
        assert fleet.metric(frozen, "medevents_processor_in_flight") > 0
        fleet.signal(frozen, signal.SIGSTOP)  # a long GC pause, a VM freeze: past the 3 s ack wait
        await asyncio.sleep(6)
        fleet.signal(frozen, signal.SIGCONT)
        docs = await wait_for_documents(mongo_settings, len(published.events), timeout=60)
        await asyncio.sleep(1)
        assert fleet.metric(frozen, "medevents_processor_abandoned_total") > 0
        docs = await wait_for_documents(mongo_settings, len(published.events), timeout=1)
        check_exactly_once_in_order(published, docs)
        assert fleet.metric(healthy, "medevents_processor_applied_total") > 0
    finally:
        fleet.kill_all()
