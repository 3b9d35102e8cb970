"""The ingest API's response bodies on the wire: what the routes encode and the OpenAPI document
describes (both import them from here). msgspec Structs, so the document is generated from the
same types the routes encode."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from medevents.model import Timestamp

__all__ = [
    "Accepted",
    "BatchItem",
    "BatchResult",
    "EventResult",
    "PatientSummary",
    "Problem",
    "ProcessedEvent",
    "TimelinePage",
    "shown",
]


class Accepted(msgspec.Struct):
    """The answer to an accepted event (202)."""

    status: str  # always "queued": durably in JetStream
    eventId: str
    duplicate: bool  # JetStream already had this event id


class BatchItem(msgspec.Struct, omit_defaults=True):
    """One event's outcome in a batch answer."""

    index: int
    status: str  # "queued" or "error"
    eventId: str | None = None
    duplicate: bool | None = None
    error: dict[str, Any] | None = None


class BatchResult(msgspec.Struct):
    """The answer to ``POST /events/batch`` (202 all queued, 207 otherwise)."""

    status: str  # "queued" (all), "partial" or "rejected" (none)
    accepted: int
    rejected: int
    items: list[BatchItem]


class Problem(msgspec.Struct):
    """An RFC 9457 problem document."""

    type: str
    title: str
    status: int
    detail: str
    field: str | msgspec.UnsetType = msgspec.UNSET  # the failing field's path, for validation errors


class EventResult(msgspec.Struct):
    """What the handler reported (the old demo's ``result``)."""

    status: str  # "success", "failed", or another status a custom handler returned
    message: str


class ProcessedEvent(msgspec.Struct):
    """A processed or failed event as the processor stores it: the old demo's document plus
    ``status`` and where it came from in the stream. ``type``, ``data`` and ``ts`` are null only
    for a payload that could not be decoded (then ``status`` is ``failed``).

    The routes answer the stored document as it is (see :func:`shown`), so a document written by
    something else (the old demo's, a hand-made one) is shown too, not refused; this Struct is
    the shape the OpenAPI document promises and a test holds the processor to."""

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


def shown(doc: dict[str, Any]) -> dict[str, Any]:
    """A ``processed_events`` document (without ``_id``) as the API shows it: plus ``status``."""
    failed = doc.get("result", {}).get("status") == "failed"
    return {"status": "failed" if failed else "processed", **doc}


class TimelinePage(msgspec.Struct):
    """One page of a patient's events in processing order."""

    patientId: str
    events: list[dict[str, Any]]  # ProcessedEvent documents (the OpenAPI document says so)
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
