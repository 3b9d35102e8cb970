"""Filling stream ``EVENTS`` directly (as ingest would, without HTTP): for benchmarks that measure
what comes after ingest."""

from __future__ import annotations

import asyncio
import time

import msgspec
from nats.aio.msg import Msg

from medevents.config import NatsSettings, StreamSettings
from medevents.loadgen import SentEvent
from medevents.loadgen.events import EventFactory, event_id_of
from medevents.natsconn import connect, ensure_stream
from medevents.subjects import ingest_subject, patient_token

__all__ = ["prefill"]


class _Ack(msgspec.Struct):
    seq: int = 0
    duplicate: bool = False


_decode_ack = msgspec.json.Decoder(_Ack).decode


async def prefill(
    nats_url: str, factory: EventFactory, per_patient: int, window: int = 2000
) -> dict[str, SentEvent]:
    """Publish ``per_patient`` events for each of the factory's patients, patients interleaved,
    each with the id ingest would derive; wait for every PubAck. Returns what was sent, in the
    form :func:`medevents.loadgen.verify` compares with the store."""
    nc = await connect(NatsSettings(url=nats_url), "medevents-bench-prefill")
    try:
        await ensure_stream(nc.jetstream(), StreamSettings())
        inbox = nc.new_inbox() + "."
        slots = asyncio.Semaphore(window)
        acks: list[_Ack] = []
        done = asyncio.Event()
        total = factory.patients * per_patient

        async def on_reply(msg: Msg) -> None:
            acks.append(_decode_ack(msg.data))
            slots.release()
            if len(acks) == total:
                done.set()

        await nc.subscribe(inbox + "*", cb=on_reply)
        sent: dict[str, SentEvent] = {}
        n = 0
        for seq in range(per_patient):
            for patient in range(factory.patients):
                body = factory.body(patient, seq)
                event_id = event_id_of(body)
                pid = factory.patient_id(patient)
                sent[event_id] = SentEvent(pid, seq, time.time(), True)
                await slots.acquire()
                subject = ingest_subject(patient_token(pid))
                await nc.publish(subject, body, reply=inbox + str(n), headers={"Nats-Msg-Id": event_id})
                n += 1
        await asyncio.wait_for(done.wait(), 60)
        if any(a.duplicate or not a.seq for a in acks):
            raise RuntimeError("prefill: a publish was refused or de-duplicated")
        return sent
    finally:
        await nc.close()
