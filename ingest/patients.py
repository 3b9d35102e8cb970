"""Reading a patient back: the timeline (processed and failed events in processing order, one page
at a time) and the summary (what is stored, what failed, what still waits in the stream).

Processing order is the stream sequence: the ordering fence applies a patient's events strictly in
sequence order, so a page walks index ``patientId_sequence`` from the cursor and new events only
ever land after the last one. That makes ``after=<sequence>`` a stable cursor while events arrive.

The ``type`` and ``since``/``until`` filters are applied to the walked documents here, not in the
query: the query stays one index range (``patientId`` equal, ``sequence`` above the cursor) that
both MongoDB and the embedded store answer from the index; with the filters in it the embedded
store scans the whole collection. A filtered page examines at most ``SCAN_BUDGET`` documents and
may then answer fewer events than ``limit``, with a ``next`` link to go on.

Patient ids may hold ``/``: the route reads the id from the undecoded request path
(``raw_path``), where an encoded ``%2F`` is still one segment.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes, urlencode

import msgspec
from nats.js import JetStreamContext
from pymongo.asynchronous.database import AsyncDatabase
from starlette.convertors import PathConvertor, register_url_convertor

from medevents import store
from medevents.backlog import patient_pending
from medevents.model import EventType, PatientId, Timestamp
from medevents.store import Document
from medevents.subjects import patient_token
from medevents.timeline import DEFAULT_LIMIT, MAX_LIMIT, patient_path

from .wire import PatientSummary, TimelinePage, shown

__all__ = [
    "ANY_PATH",
    "MAX_AFTER",
    "SCAN_BUDGET",
    "BadParameter",
    "PatientPath",
    "TimelineQuery",
    "parse_patient_path",
    "parse_timeline_query",
    "read_summary",
    "read_timeline",
]

SCAN_BUDGET = 5000  # documents one filtered page may examine
MAX_AFTER = 2**63 - 1  # stream sequences are stored as 64-bit signed integers
_DIGITS = re.compile(r"[0-9]{1,19}")
_PARAMETERS = ("after", "limit", "type", "since", "until")


class _AnyPathConvertor(PathConvertor):
    """Starlette's ``path``, line breaks included: an id holding one is a 400 naming the
    parameter, not an unexplained 404."""

    regex = r"[\s\S]*"


ANY_PATH = "medevents_any_path"  # the convertor's name in route paths
register_url_convertor(ANY_PATH, _AnyPathConvertor())


class BadParameter(Exception):
    """A path or query parameter is malformed; answered as a 400 problem naming it."""

    def __init__(self, name: str, detail: str) -> None:
        super().__init__(detail)
        self.name, self.detail = name, detail


@dataclass(frozen=True)
class PatientPath:
    patient_id: str
    events: bool  # /patients/{id}/events (the timeline), else /patients/{id} (the summary)


def parse_patient_path(raw_path: bytes) -> PatientPath | None:
    """The patient and the route from the undecoded path ``.../patients/<id>[/events]``; None
    when the path is neither. ``<id>`` is one percent-encoded segment (``/`` sent as ``%2F``)."""
    parts = raw_path.split(b"/")
    if len(parts) >= 4 and parts[-3] == b"patients" and parts[-1] == b"events":
        segment, events = parts[-2], True
    elif len(parts) >= 3 and parts[-2] == b"patients":
        segment, events = parts[-1], False
    else:
        return None
    try:
        patient = unquote_to_bytes(segment).decode("utf-8")
        return PatientPath(msgspec.convert(patient, PatientId), events)
    except (UnicodeDecodeError, msgspec.ValidationError):
        raise BadParameter(
            "patientId",
            "a patient id is 1-256 characters of UTF-8 text, percent-encoded, without control or "
            "invisible formatting characters",
        ) from None


@dataclass(frozen=True)
class TimelineQuery:
    after: int = 0  # stream sequence to start after (exclusive)
    limit: int = DEFAULT_LIMIT
    type: str | None = None
    since: dt.datetime | None = None  # ts >= since
    until: dt.datetime | None = None  # ts < until

    @property
    def filtered(self) -> bool:
        return self.type is not None or self.since is not None or self.until is not None

    def matches(self, doc: Document) -> bool:
        if self.type is not None and doc.get("type") != self.type:
            return False
        if self.since is None and self.until is None:
            return True
        ts = doc.get("ts")
        if not isinstance(ts, dt.datetime):  # an undecodable payload has no time
            return False
        return (self.since is None or ts >= self.since) and (self.until is None or ts < self.until)

    def link(self, patient_id: str, after: int) -> str:
        """Path and query of the page after ``after``, with the same filters."""
        params: dict[str, Any] = {"after": after, "limit": self.limit}
        if self.type is not None:
            params["type"] = self.type
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None:
                params[name] = value.isoformat()
        return f"{patient_path(patient_id)}/events?{urlencode(params)}"


def parse_timeline_query(items: Iterable[tuple[str, str]]) -> TimelineQuery:
    """The query parameters (decoded, in order) as a :class:`TimelineQuery`; raises
    :class:`BadParameter` naming the first bad one. Unknown and repeated parameters are errors:
    a misspelt filter silently ignored would answer a different question."""
    given: dict[str, str] = {}
    for name, value in items:
        if name not in _PARAMETERS:
            raise BadParameter(name, f"unknown parameter; expected {', '.join(_PARAMETERS)}")
        if name in given:
            raise BadParameter(name, "given more than once")
        given[name] = value
    return TimelineQuery(
        after=_integer(given, "after", 0, 0, MAX_AFTER),
        limit=_integer(given, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
        type=_event_type(given.get("type")),
        since=_timestamp(given, "since"),
        until=_timestamp(given, "until"),
    )


def _integer(given: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = given.get(name)
    if raw is None:
        return default
    if not _DIGITS.fullmatch(raw) or not low <= int(raw) <= high:
        raise BadParameter(name, f"expected an integer from {low} to {high}")
    return int(raw)


def _event_type(raw: str | None) -> str | None:
    if raw is None:
        return None
    try:
        return msgspec.convert(raw, EventType)
    except msgspec.ValidationError:
        raise BadParameter("type", "an event type is 1-64 visible characters") from None


def _timestamp(given: dict[str, str], name: str) -> dt.datetime | None:
    raw = given.get(name)
    if raw is None:
        return None
    try:
        return msgspec.convert(raw, Timestamp)
    except msgspec.ValidationError:
        hint = " (a `+` in a query string means a space: send the offset as %2B)" if " " in raw else ""
        raise BadParameter(
            name, f"expected an RFC 3339 date-time with an offset, e.g. 2025-10-01T10:00:00Z{hint}"
        ) from None


async def read_timeline(db: AsyncDatabase[Document], patient_id: str, query: TimelineQuery) -> TimelinePage:
    """One page: up to ``limit`` matching events after the cursor, in processing order."""
    fetch = SCAN_BUDGET if query.filtered else query.limit + 1
    found: list[dict[str, Any]] = []
    cursor, scanned, more = query.after, 0, False
    documents = store.processed_events(db).find(
        {"patientId": patient_id, "sequence": {"$gt": query.after}},
        {"_id": 0},
        sort=[("sequence", 1)],
        limit=fetch,
        batch_size=min(fetch, query.limit + 1),
    )
    try:
        async for doc in documents:
            scanned += 1
            if query.matches(doc):
                if len(found) == query.limit:
                    more = True  # one more matching event exists: this page is full
                    break
                found.append(shown(doc))
            cursor = int(doc["sequence"])
        else:
            more = scanned == fetch  # the scan budget ran out before the patient's last event
    finally:
        await documents.close()
    link = query.link(patient_id, cursor) if more else None
    return TimelinePage(patient_id, found, link, cursor)


async def read_summary(db: AsyncDatabase[Document], js: JetStreamContext, patient_id: str) -> PatientSummary:
    """Stored and failed counts, the last event, and the events still waiting in the stream.

    The counts walk the patient's index range once (an index on ``result.status`` would answer
    the failed count alone, at the price of every insert). The last event is searched from the
    watermark, which points at it, so the embedded store reads one document, not the patient's all.
    """
    token = patient_token(patient_id)
    mark = await store.watermarks(db).find_one({"_id": token}, {"seq": 1})
    watermark = int(mark["seq"]) if mark else 0
    events = store.processed_events(db)
    counted = await (
        await events.aggregate(
            [
                {"$match": {"patientId": patient_id}},
                {
                    "$group": {
                        "_id": None,
                        "stored": {"$sum": 1},
                        "failed": {"$sum": {"$cond": [{"$eq": ["$result.status", "failed"]}, 1, 0]}},
                    }
                },
            ]
        )
    ).to_list()
    fields = {"_id": 0, "eventId": 1, "sequence": 1, "processedAt": 1}
    last = await events.find_one(
        {"patientId": patient_id, "sequence": {"$gte": watermark}}, fields, sort=[("sequence", -1)]
    )
    if last is None and watermark > 0:
        # The watermark's event was a repeat of an id stored earlier under another sequence.
        last = await events.find_one({"patientId": patient_id}, fields, sort=[("sequence", -1)])
    pending = await patient_pending(js, token, watermark)
    totals = counted[0] if counted else {"stored": 0, "failed": 0}
    return PatientSummary(
        patientId=patient_id,
        stored=int(totals["stored"]),
        failed=int(totals["failed"]),
        pending=pending,
        lastEventId=last["eventId"] if last else None,
        lastSequence=int(last["sequence"]) if last else None,
        lastProcessedAt=last["processedAt"] if last else None,
    )
