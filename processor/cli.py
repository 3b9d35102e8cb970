"""``medevents dlq list|replay``: dead letters from the command line (configured like the processor,
by ``NATS_URL``, ``MONGO_URI`` and the rest)."""

from __future__ import annotations

import asyncio
import sys

import msgspec

from medevents import store
from medevents.config import MongoSettings, NatsSettings, load
from medevents.natsconn import connect

from .deadletter import list_dead_letters, replay_dead_letters

__all__ = ["dlq_command"]

_encode = msgspec.json.Encoder().encode


async def _dlq(action: str, patient: str | None, event_id: str | None) -> int:
    nats_settings, mongo_settings = load(NatsSettings), load(MongoSettings)
    nc = await connect(nats_settings, "medevents-dlq", allow_reconnect=False)
    try:
        js = nc.jetstream(timeout=nats_settings.request_timeout_s)
        if action == "list":
            for letter in await list_dead_letters(js):
                sys.stdout.write(_encode(letter).decode() + "\n")
            return 0
        client = store.mongo_client(mongo_settings, "medevents-dlq")
        try:
            replayed = await replay_dead_letters(
                js, store.database(client, mongo_settings), patient=patient, event_id=event_id
            )
        finally:
            await client.close()
        for letter in replayed:
            sys.stdout.write(
                _encode({"replayed": letter.event_id, "sequence": letter.sequence}).decode() + "\n"
            )
        sys.stderr.write(f"replayed {len(replayed)} dead letter(s)\n")
        return 0
    finally:
        await nc.close()


def dlq_command(action: str, *, patient: str | None = None, event_id: str | None = None) -> int:
    """Run ``medevents dlq <action>``; returns the exit code."""
    return asyncio.run(_dlq(action, patient, event_id))
