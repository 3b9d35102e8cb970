"""``medevents dlq list|replay``: dead letters from the command line (configured like the processor,
by ``NATS_URL``, ``MONGO_URI`` and the rest).

``list`` shows each patient as the keyed hash the logs carry (``patient``), so a listing on a shared
terminal or in a ticket holds no patient id; ``--show-patient`` adds the id itself."""

from __future__ import annotations

import asyncio
import sys

import msgspec

from medevents import logs, store
from medevents.config import LogSettings, MongoSettings, NatsSettings, load
from medevents.natsconn import connect

from .deadletter import DeadLetter, list_dead_letters, replay_dead_letters

__all__ = ["dlq_command"]

_encode = msgspec.json.Encoder().encode


def _listed(letter: DeadLetter, show_patient: bool) -> dict[str, object]:
    """A dead letter as ``dlq list`` prints it: the patient as its keyed hash, the id on request."""
    out: dict[str, object] = {}
    for name, value in msgspec.structs.asdict(letter).items():
        if name == "patient_id":
            out["patient"] = logs.patient_ref(letter.patient_id)
            if show_patient:
                out["patient_id"] = value
        else:
            out[name] = value
    return out


async def _dlq(action: str, patient: str | None, event_id: str | None, show_patient: bool) -> int:
    nats_settings, mongo_settings = load(NatsSettings), load(MongoSettings)
    logs.use_patient_hash_key(load(LogSettings))
    nc = await connect(nats_settings, "medevents-dlq", allow_reconnect=False)
    try:
        js = nc.jetstream(timeout=nats_settings.request_timeout_s)
        if action == "list":
            for letter in await list_dead_letters(js):
                sys.stdout.write(_encode(_listed(letter, show_patient)).decode() + "\n")
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


def dlq_command(
    action: str, *, patient: str | None = None, event_id: str | None = None, show_patient: bool = False
) -> int:
    """Run ``medevents dlq <action>``; returns the exit code."""
    return asyncio.run(_dlq(action, patient, event_id, show_patient))
