"""What the read routes answer: stored events, a patient's timeline page and summary.

msgspec Structs, so the OpenAPI document is generated from the same types the routes encode.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from medevents.model import Timestamp

__all__ = ["EventResult", "PatientSummary", "ProcessedEvent", "TimelinePage", "processed_event"]


class EventResult(msgspec.Struct):
    """What the handler reported (the old demo's ``result``)."""

    status: str  # "success", "failed", or another status a custom handler returned
    message: str


class ProcessedEvent(msgspec.Struct):
    """A processed or failed event: the old demo's document plus ``status`` and where it came from
    in the stream. ``type``, ``data`` and ``ts`` are null only for a payload that could not be
    decoded (then ``status`` is ``failed``)."""

    status: Literal["processed", "failed"]
    eventId: str
    patientId: str
    type: str | None
    data: dict[str, Any] | None
    ts: Timestamp | None
    processedAt: Timestamp
    processingDurationMs: int
    result: EventResult
    createdAt: Timestamp
    updatedAt: Timestamp
    sequence: int  # stream sequence: the patient's processing order
    partition: int
    attempts: int  # deliveries it took
    startedAt: Timestamp
    processedBy: str  # processor member id


def processed_event(doc: dict[str, Any]) -> ProcessedEvent:
    """A ``processed_events`` document (without ``_id``) as the API shows it."""
    failed = doc.get("result", {}).get("status") == "failed"
    return msgspec.convert({**doc, "status": "failed" if failed else "processed"}, ProcessedEvent)


class TimelinePage(msgspec.Struct):
    """One page of a patient's events in processing order."""

    patientId: str
    events: list[ProcessedEvent]
    # Path and query of the next page; null when this page reached the last stored event.
    next: str | None
    # The stream sequence this page read up to: ask again with ``after=<cursor>`` for events
    # processed later (``--follow`` does).
    cursor: int


class PatientSummary(msgspec.Struct):
    """Where a patient stands: what is stored, and whether anything still waits."""

    patientId: str
    stored: int  # processed and failed events in MongoDB
    failed: int
    pending: int  # events of this patient in the stream after its watermark (not yet applied)
    lastEventId: str | None  # the last event in processing order
    lastSequence: int | None
    lastProcessedAt: Timestamp | None
