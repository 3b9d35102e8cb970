"""Fault injection with processor processes: SIGKILL, scaling, graceful stops. Each run must keep
every invariant: every event stored exactly once, each patient's events applied in stream order,
never two events of one patient at once."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
from nats.js import JetStreamContext

from medevents.config import MongoSettings, NatsSettings, StreamSettings
from medevents.natsconn import ensure_stream

from .processor_procs import ProcessorFleet, check_executions
from .processor_support import (
    PARTITIONS,
    Published,
    check_exactly_once_in_order,
    publish,
    wait_for_documents,
)

PATIENTS = [f"chaos-{i}" for i in range(50)]


async def _publish_over(js: JetStreamContext, per_patient: int, seconds: float, published: Published) -> None:
    """Publish ``per_patient`` events for each patient in rounds spread over ``seconds``."""
    rounds = 10
    for r in range(rounds):
        await publish(js, PATIENTS, per_patient // rounds, published, prefix=f"r{r}")
        await asyncio.sleep(seconds / rounds)


async def _finish(
    fleet: ProcessorFleet,
    mongo: MongoSettings,
    published: Published,
    js: JetStreamContext,
    timeout: float = 90,
) -> None:
    docs = await wait_for_documents(mongo, len(published.events), timeout=timeout)
    if len(docs) < len(published.events):
        print(await _diagnose(fleet, js))
        for name in fleet.children:
            print(name, fleet.tail(name))
    await asyncio.sleep(1.0)  # anything stored twice would show up now
    docs = await wait_for_documents(mongo, len(published.events), timeout=1)
    check_exactly_once_in_order(published, docs)
    check_executions(published, fleet.log)


async def _diagnose(fleet: ProcessorFleet, js: JetStreamContext) -> str:
    """What the fleet and the consumers looked like when a run did not finish (for the failure)."""
    out = []
    for p in range(PARTITIONS):
        info = await js.consumer_info("EVENTS", f"processor-{p}")
        out.append(
            f"consumer {p}: pending={info.num_pending} ack_pending={info.num_ack_pending} "
            f"redelivered={info.num_redelivered} waiting={info.num_waiting}"
        )
    for name in fleet.children:
        for metric in ("in_flight", "lanes", "running", "capacity", "partitions_owned", "abandoned_total"):
            out.append(f"{name} {metric}={fleet.metric(name, 'medevents_processor_' + metric)}")
    return "\n".join(out)


async def _chaos(
    seed: int,
    tmp_path: Path,
    nats_settings: NatsSettings,
    mongo: MongoSettings,
    js: JetStreamContext,
    per_patient: int,
) -> None:
    rng = random.Random(seed)
    await ensure_stream(js, StreamSettings(partitions=PARTITIONS))
    fleet = ProcessorFleet(tmp_path, nats_settings.url, mongo)
    try:
        for _ in range(3):
            fleet.start()
        fleet.wait_ready()
        published = Published()
        publishing = asyncio.create_task(_publish_over(js, per_patient, 12, published))
        kills = 0
        while not publishing.done() or kills < 4:
            await asyncio.sleep(rng.uniform(1.5, 3.5))
            fleet.kill_random(rng)
            kills += 1
            fleet.start()
        await publishing
        await _finish(fleet, mongo, published, js)
    finally:
        fleet.kill_all()


@pytest.mark.parametrize("seed", [1, 2])
async def test_sigkill_chaos_keeps_every_invariant(
    seed: int,
    tmp_path: Path,
    nats_settings: NatsSettings,
    mongo_settings: MongoSettings,
    js: JetStreamContext,
) -> None:
    await _chaos(seed, tmp_path, nats_settings, mongo_settings, js, per_patient=40)


@pytest.mark.soak
@pytest.mark.parametrize("seed", range(3, 13))
async def test_sigkill_chaos_soak(
    seed: int,
    tmp_path: Path,
    nats_settings: NatsSettings,
    mongo_settings: MongoSettings,
    js: JetStreamContext,
) -> None:
    await _chaos(seed, tmp_path, nats_settings, mongo_settings, js, per_patient=100)


async def test_scaling_up_and_down_during_load(
    tmp_path: Path, nats_settings: NatsSettings, mongo_settings: MongoSettings, js: JetStreamContext
) -> None:
    await ensure_stream(js, StreamSettings(partitions=PARTITIONS))
    fleet = ProcessorFleet(tmp_path, nats_settings.url, mongo_settings, delay_ms=(5, 30))
    try:
        first = fleet.start()
        fleet.wait_ready()
        published = Published()
        publishing = asyncio.create_task(_publish_over(js, 30, 10, published))
        await asyncio.sleep(2)
        added = [fleet.start(), fleet.start()]  # scale up to 3
        fleet.wait_ready()
        await asyncio.sleep(3)
        assert fleet.metric(added[0], "medevents_processor_partitions_owned") > 0
        assert await asyncio.to_thread(fleet.terminate, first) == 0  # scale down: graceful drain
        await asyncio.sleep(2)
        assert await asyncio.to_thread(fleet.terminate, added[0]) == 0
        for _ in range(50):  # the last one takes over every partition
            if fleet.metric(added[1], "medevents_processor_partitions_owned") == PARTITIONS:
                break
            await asyncio.sleep(0.1)
        assert fleet.metric(added[1], "medevents_processor_partitions_owned") == PARTITIONS
        await publishing
        await _finish(fleet, mongo_settings, published, js)
    finally:
        fleet.kill_all()
