"""The stored document of a processed event: the old demo's shape plus stream sequence, partition
and attempts. Pure: building it does no I/O."""

from __future__ import annotations

import datetime as dt
from typing import Any

from medevents.model import Event

from .handlers import HandlerResult

__all__ = ["processed_document"]


def processed_document(
    event: Event | None,
    *,
    event_id: str,
    patient_id: str,
    sequence: int,
    partition: int,
    attempts: int,
    started: dt.datetime,
    finished: dt.datetime,
    result: HandlerResult,
    member: str,
) -> dict[str, Any]:
    """The ``processed_events`` document. ``event`` is None when the payload could not be decoded
    (then only what the stream knows is stored, and the result says why it failed)."""
    return {
        "eventId": event_id,
        "patientId": event.patientId if event else patient_id,
        "type": event.type if event else None,
        "data": event.data if event else None,
        "ts": event.ts if event else None,
        "processedAt": finished,
        "startedAt": started,
        "processingDurationMs": round((finished - started).total_seconds() * 1000),
        "result": {"status": result.status, "message": result.message},
        "sequence": sequence,
        "partition": partition,
        "attempts": attempts,
        "processedBy": member,
        "createdAt": finished,
        "updatedAt": finished,
    }
