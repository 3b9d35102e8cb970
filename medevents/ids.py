"""Event id derivation: the client's ``eventId``, else its ``Idempotency-Key``, else a UUID derived
from the canonical event, so the same payload posted twice is one event (the old demo's promise)."""

from __future__ import annotations

import datetime as dt
import uuid

import msgspec

from medevents.model import Event

__all__ = ["canonical_event", "derive_event_id"]

# Fixed namespace of medevents' derived ids (a UUIDv5 of the canonical event under it).
_NAMESPACE = uuid.UUID("6f1c3c1e-4a7e-5b8a-9d2e-3f0b8c1d2e4f")
_canonical = msgspec.json.Encoder(order="sorted")


def canonical_event(event: Event) -> bytes:
    """The event's identity as bytes: keys sorted at every level, ``ts`` as the same instant in UTC,
    ``eventId`` left out (it is what we derive)."""
    ts = event.ts.astimezone(dt.UTC)
    return _canonical.encode({"patientId": event.patientId, "type": event.type, "data": event.data, "ts": ts})


def derive_event_id(event: Event, idempotency_key: str | None = None) -> str:
    """The id that de-duplicates ``event`` in JetStream (``Nats-Msg-Id``) and MongoDB."""
    if isinstance(event.eventId, str):
        return event.eventId
    if idempotency_key:
        return idempotency_key
    return str(uuid.uuid5(_NAMESPACE, canonical_event(event).decode("utf-8")))
