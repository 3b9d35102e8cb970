"""nats-server on the power-loss layer: with its old default configuration (fsync every two
minutes) a power failure loses publishes it had acknowledged, which proves the layer bites; with
``sync_interval: always``, as medevents runs it, it loses none. A plain crash (SIGKILL, the page
cache survives) loses none either way."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import pytest
from nats.js.errors import NotFoundError

from medevents import topology
from medevents.config import IngestSettings, NatsSettings, StreamSettings
from medevents.ingest._metrics import IngestMetrics
from medevents.ingest.publisher import Publisher, Unavailable
from medevents.local import EmbeddedNats
from medevents.natsconn import connect, ensure_stream

from .powerloss import PowerLossDisk

EVENTS = 1000


async def publish(url: str, events: int, window: int = 200) -> set[str]:
    """Publish ``events`` events to stream EVENTS as ingest does; the ids the server acknowledged."""
    nc = await connect(NatsSettings(url=url), "faults-publisher")
    try:
        js = nc.jetstream()
        await ensure_stream(js, StreamSettings())
        slots = asyncio.Semaphore(window)
        acked: set[str] = set()

        async def one(n: int) -> None:
            async with slots:
                event_id = f"e-{n}"
                await js.publish(f"events.p{n % 20}", b"{}", headers={"Nats-Msg-Id": event_id})
                acked.add(event_id)

        await asyncio.gather(*(one(n) for n in range(events)))
        return acked
    finally:
        await nc.close()


async def stored(url: str) -> set[str]:
    """The ids of every event in stream EVENTS (none when the stream itself is gone)."""
    nc = await connect(NatsSettings(url=url), "faults-reader")
    try:
        js = nc.jetstream()
        try:
            state = (await js.stream_info(topology.STREAM)).state
        except NotFoundError:
            return set()
        found = set()
        for seq in range(state.first_seq, state.last_seq + 1):
            msg = await js.get_msg(topology.STREAM, seq)
            found.add((msg.headers or {})["Nats-Msg-Id"])
        return found
    finally:
        await nc.close()


async def restart_after(
    server: EmbeddedNats, power_disk: PowerLossDisk | None
) -> tuple[set[str], dict[str, Any] | None]:
    """SIGKILL the server, cut the power too when given the disk, start it again: what it has
    stored, and the layer's report of the cut (None without one)."""
    server.kill()
    report: dict[str, Any] | None = None
    if power_disk is not None:
        report = power_disk.cut()
        print(f"layer at the cut: {report}")
        power_disk.mount()
    server.start()
    return await stored(server.url), report


@pytest.mark.parametrize(
    ("sync", "power_cut", "loses"),
    [
        ("interval", True, True),  # the old default: acknowledged, then lost
        ("always", True, False),
        ("interval", False, False),  # a process crash alone: the kernel still has the writes
    ],
    ids=["old-default-power-cut", "always-power-cut", "old-default-crash"],
)
async def test_acknowledged_publishes_after_a_failure(
    power_disk: PowerLossDisk, sync: Literal["always", "interval"], power_cut: bool, loses: bool
) -> None:
    server = EmbeddedNats(power_disk.mnt / "nats", sync=sync)
    server.start()
    try:
        acked = await publish(server.url, EVENTS)
        stored_after, report = await restart_after(server, power_disk if power_cut else None)
        lost = acked - stored_after
    finally:
        server.stop()

    print(f"sync={sync} power_cut={power_cut}: {len(lost)} of {len(acked)} acknowledged publishes lost")
    assert len(acked) == EVENTS
    if loses:
        assert lost, f"the layer did not bite: nothing lost ({report})"
    else:
        assert not lost, f"{len(lost)} of {len(acked)} acknowledged publishes lost"


async def publish_grouped(url: str, events: int) -> tuple[set[str], float]:
    """Publish ``events`` events through ingest's publisher, all at once so that they go out in
    JetStream atomic batches (group commit); the ids acknowledged and how many went in batches."""
    metrics = IngestMetrics()
    publisher = Publisher(NatsSettings(url=url), StreamSettings(), IngestSettings(), metrics)
    await publisher.start()
    try:
        assert publisher.atomic, "the stream takes no atomic batches"

        async def one(n: int) -> str | None:
            try:
                await publisher.publish(f"events.p{n % 20}", b"{}", f"e-{n}")
            except Unavailable:
                return None
            return f"e-{n}"

        acked = {i for i in await asyncio.gather(*(one(n) for n in range(events))) if i is not None}
    finally:
        await publisher.close()
    batched = sum(
        s.value
        for m in metrics.registry.collect()
        if m.name == "medevents_ingest_publish_batch_events"
        for s in m.samples
        if s.name.endswith("_sum")
    ) - sum(
        s.value
        for m in metrics.registry.collect()
        if m.name == "medevents_ingest_publish_batch_events"
        for s in m.samples
        if s.name.endswith("_bucket") and s.labels["le"] == "1.0"
    )
    return acked, batched


@pytest.mark.parametrize(("sync", "loses"), [("always", False), ("interval", True)])
async def test_atomic_batches_after_a_power_cut(
    power_disk: PowerLossDisk, sync: Literal["always", "interval"], loses: bool
) -> None:
    """Ingest's group commit keeps the guarantee: events acknowledged as part of an atomic batch
    (one fsync for the whole batch, before the batch's PubAck) are all there after a power cut.
    Without fsync (the opt-out) the same batches are lost: the test can tell."""
    server = EmbeddedNats(power_disk.mnt / "nats", sync=sync)
    server.start()
    try:
        acked, batched = await publish_grouped(server.url, EVENTS)
        stored_after, report = await restart_after(server, power_disk)
        lost = acked - stored_after
    finally:
        server.stop()
    print(f"sync={sync}: {len(acked)} acknowledged, {batched:.0f} in atomic batches, {len(lost)} lost")
    assert len(acked) == EVENTS
    assert batched >= EVENTS // 2, "too few events went out in batches for the test to mean anything"
    if loses:
        assert lost, f"the layer did not bite: nothing lost ({report})"
    else:
        assert not lost, f"{len(lost)} of {len(acked)} acknowledged publishes lost"
