"""The ingest API's response bodies on the wire: what the routes encode and the OpenAPI document
describes (both import them from here)."""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = ["Accepted", "BatchItem", "BatchResult", "Problem"]


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
