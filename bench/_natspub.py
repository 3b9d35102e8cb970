"""The ceiling under ingest: how fast one Python process gets JetStream PubAcks for events, with
the same technique as ingest's publisher (many publishes pending on one reply subscription,
bounded by a window) and no HTTP at all."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import NamedTuple

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from medevents.config import NatsSettings, StreamSettings
from medevents.loadgen.events import EventFactory
from medevents.loadgen.stats import Summary, summarize
from medevents.natsconn import connect, ensure_stream
from medevents.subjects import ingest_subject

__all__ = ["PublishRate", "publish_latency", "publish_rate"]


class Bodies(NamedTuple):
    run: str
    items: list[tuple[str, bytes]]


@contextlib.asynccontextmanager
async def _publisher(nats_url: str, patients: int) -> AsyncIterator[tuple[NATS, JetStreamContext, Bodies]]:
    """A connection, the stream, and one event body per patient (subject, payload, run id)."""
    nc = await connect(NatsSettings(url=nats_url), "medevents-bench")
    try:
        js = nc.jetstream()
        await ensure_stream(js, StreamSettings())
        run = uuid.uuid4().hex[:8]
        factory = EventFactory(run, patients, 256)
        bodies = [(ingest_subject(factory.patient_id(p)), factory.body(p, 0)) for p in range(patients)]
        yield nc, js, Bodies(run, bodies)
    finally:
        await nc.close()


@dataclass
class PublishRate:
    """What one Python process reached publishing events for PubAcks, no HTTP."""

    rate: float  # acknowledged messages per second
    cpu_us: float  # this process's CPU per acknowledged message


async def publish_rate(
    nats_url: str, seconds: float, window: int = 4000, patients: int = 1000, batch: int = 1
) -> PublishRate:
    """PubAcks per second over ``seconds``, at most ``window`` messages pending at once.

    ``batch=1``: one publish per event, each awaiting its own PubAck (ingest's technique).
    ``batch>1``: JetStream atomic batches of ``batch`` events (``Nats-Batch-*`` headers, one PubAck
    for the commit; the stream needs ``allow_atomic``), as many in flight as ``window`` allows.
    """
    async with _publisher(nats_url, patients) as (nc, _, prepared):
        run, bodies = prepared.run, prepared.items
        inbox = nc.new_inbox() + "."
        slots = asyncio.Semaphore(max(1, window // batch))
        acked = 0
        errors: list[bytes] = []

        async def on_reply(msg: Msg) -> None:
            nonlocal acked
            if b'"error"' in msg.data:
                errors.append(msg.data)
            else:
                acked += batch
            slots.release()

        await nc.subscribe(inbox + "*", cb=on_reply)
        n = 0
        cpu0 = time.process_time()
        started = time.monotonic()
        end = started + seconds
        while time.monotonic() < end:
            await slots.acquire()
            if batch == 1:
                subject, body = bodies[n % patients]
                await nc.publish(subject, body, reply=inbox + str(n), headers={"Nats-Msg-Id": f"{run}-{n}"})
                n += 1
                continue
            batch_id = f"{run}-b{n}"
            for i in range(1, batch + 1):
                subject, body = bodies[n % patients]
                headers = {
                    "Nats-Msg-Id": f"{run}-{n}",
                    "Nats-Batch-Id": batch_id,
                    "Nats-Batch-Sequence": str(i),
                }
                reply = ""
                if i == batch:
                    headers["Nats-Batch-Commit"] = "1"
                    reply = inbox + batch_id
                await nc.publish(subject, body, reply=reply, headers=headers)
                n += 1
        elapsed = time.monotonic() - started
        if errors:
            raise RuntimeError(f"JetStream refused {len(errors)} publishes, e.g. {errors[0][:200]!r}")
        return PublishRate(acked / elapsed, 1e6 * (time.process_time() - cpu0) / max(1, acked))


async def publish_latency(nats_url: str, rate: float, seconds: float, patients: int = 1000) -> Summary:
    """Percentiles of the JetStream PubAck wait when one Python process publishes at ``rate``
    per second on a fixed schedule (``js.publish``, one coroutine per event): the part of ingest's
    latency that is NATS and the machine, not HTTP."""
    async with _publisher(nats_url, patients) as (_, js, prepared):
        run, bodies = prepared.run, prepared.items
        waits: list[float] = []

        async def one(n: int) -> None:
            subject, body = bodies[n % patients]
            started = time.perf_counter()
            await js.publish(subject, body, headers={"Nats-Msg-Id": f"{run}-{n}"})
            waits.append(time.perf_counter() - started)

        tasks: list[asyncio.Task[None]] = []
        start = time.perf_counter()
        for n in range(int(rate * seconds)):
            delay = start + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(n)))
        await asyncio.gather(*tasks)
        return summarize(waits)
