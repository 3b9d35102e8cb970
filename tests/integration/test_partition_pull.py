"""A partition's pull that stops (a rebalance hands the partition to another pod) keeps nothing
delivered back from the partition's next owner."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from integration.processor_support import Published, publish
from medevents.config import NatsSettings, StreamSettings
from medevents.natsconn import ensure_stream
from medevents.processor._pull import PartitionPull
from medevents.processor.consumers import ensure_consumer


@asynccontextmanager
async def connected(url: str) -> AsyncIterator[NATS]:
    nc = await nats.connect(url)
    try:
        yield nc
    finally:
        await nc.close()


async def test_a_partition_handed_over_keeps_no_delivery_back(
    js: JetStreamContext, nats_settings: NatsSettings
) -> None:
    """Found by the leader-kill runs (a partition in three of eight waited the 30 s ack wait): a
    pull loop that stopped (its partition went to the pod started next) dropped its inbox while
    its pull request was still open, and deliveries the busy process had not read yet were
    discarded with it; JetStream sent them again only after the ack wait. A stopping pull now
    lets its request end, then hands back (NAK) what it got. Here the event loop is kept busy
    while the deliveries arrive, as a loaded processor's is."""

    def publish_while_busy() -> Published:
        async def go() -> Published:
            async with connected(nats_settings.url) as other:
                published = await publish(other.jetstream(timeout=5), ["handover"], 20, prefix="late")
                await asyncio.sleep(0.3)  # delivered into the busy process's socket meanwhile
                return published

        return asyncio.run(go())

    await ensure_stream(js, StreamSettings(partitions=1, replicas=1))
    await ensure_consumer(js, 0, ack_wait_s=30.0, max_ack_pending=1000)
    async with connected(nats_settings.url) as nc:
        first = PartitionPull(nc, 0)
        await first.start()
        await publish(js, ["handover"], 3, prefix="early")
        early = await first.fetch(50, timeout=2.0)  # the request stays open for the other 47
        assert len(early) == 3
        for msg in early:
            await msg.ack()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            late = pool.submit(publish_while_busy).result()  # blocks this event loop: busy
        await first.stop()
        second = PartitionPull(nc, 0)
        await second.start()
        got: list[str] = []
        deadline = time.monotonic() + 5.0  # the ack wait is 30 s
        while len(got) < len(late.events) and time.monotonic() < deadline:
            for msg in await second.fetch(50, timeout=1.0):
                got.append((msg.headers or {}).get("Nats-Msg-Id", ""))
                await msg.ack()
        await second.stop()
    assert sorted(got) == sorted(late.events), f"{len(late.events) - len(got)} deliveries held back"
