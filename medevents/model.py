"""The event and the messages built from it, with one prebuilt decoder and encoder per type.

An :class:`Event` is what a client posts (the old demo's shape plus an optional ``eventId``).
Unknown fields are rejected: a misspelt field silently dropped would be lost medical data.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import msgspec
from msgspec import UNSET, Meta, UnsetType

__all__ = [
    "EVENT_ID_PATTERN",
    "MAX_DATA_DEPTH",
    "Event",
    "EventInvalid",
    "EventType",
    "PatientId",
    "Timestamp",
    "check_event",
    "decode_event",
    "decode_events",
    "encode",
]

# No control characters, no invisible formatting (zero-width, bidirectional marks, BOM),
# no line or paragraph separators: every character of an identifier is one a person can see.
# `(?!\n)` before `$`: Python's `$` also matches before a final newline, which would let
# "id\n" through (JSON Schema's ECMA-262 `$` does not; the pattern means the same in both).
_PRINTABLE = r"^[^\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff]+(?!\n)$"

PatientId = Annotated[str, Meta(min_length=1, max_length=256, pattern=_PRINTABLE)]
EventType = Annotated[str, Meta(min_length=1, max_length=64, pattern=_PRINTABLE)]
Timestamp = Annotated[dt.datetime, Meta(tz=True)]  # RFC 3339 date-time with an offset
# Event ids travel as the NATS header Nats-Msg-Id: visible ASCII only, no spaces.
EVENT_ID_PATTERN = r"^[!-~]+(?!\n)$"
EventId = Annotated[str, Meta(min_length=1, max_length=128, pattern=EVENT_ID_PATTERN)]

# MongoDB documents nest at most 100 levels and hold 64-bit integers: reject at the door what
# the store would refuse later, so a 202 never turns into a permanent failure.
MAX_DATA_DEPTH = 64
_INT64 = (-(2**63), 2**63 - 1)


class Event(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """A medical event as posted by a client."""

    patientId: PatientId
    type: EventType
    data: dict[str, Any]
    ts: Timestamp
    eventId: EventId | UnsetType = UNSET


class EventInvalid(ValueError):
    """An event decoded but is not acceptable; ``field`` is the path of the offending value."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{detail} - at `{field}`")
        self.field = field
        self.detail = detail


_event_decoder = msgspec.json.Decoder(Event)
_events_decoder = msgspec.json.Decoder(list[msgspec.Raw])
_encoder = msgspec.json.Encoder()
encode = _encoder.encode


def _check_data(value: Any, path: str, depth: int) -> None:
    if depth > MAX_DATA_DEPTH:
        raise EventInvalid(path, f"Nested deeper than {MAX_DATA_DEPTH} levels")
    if isinstance(value, dict):
        for key, item in value.items():
            if key.startswith("$") or "\x00" in key:
                raise EventInvalid(f"{path}.{key}", "Keys may not start with `$` or contain NUL")
            _check_data(item, f"{path}.{key}", depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_data(item, f"{path}[{index}]", depth + 1)
    elif isinstance(value, int) and not isinstance(value, bool) and not _INT64[0] <= value <= _INT64[1]:
        raise EventInvalid(path, "Integer outside the 64-bit range")


def check_event(event: Event) -> Event:
    """Reject what JSON allows but the store cannot keep; return the event unchanged."""
    _check_data(event.data, "$.data", 1)
    return event


def decode_event(body: bytes) -> Event:
    """Decode and check one event. Raises msgspec.DecodeError (malformed JSON),
    msgspec.ValidationError or :class:`EventInvalid` (valid JSON, invalid event)."""
    try:
        return check_event(_event_decoder.decode(body))
    except RecursionError:
        raise EventInvalid("$", "Nested too deeply") from None
    except UnicodeDecodeError as exc:
        # msgspec raises this, not DecodeError, for invalid UTF-8 inside a string of a free-form
        # value (``data``); it is malformed input all the same.
        raise msgspec.DecodeError(f"JSON is malformed: invalid UTF-8 (byte {exc.start})") from None


def decode_events(body: bytes) -> list[msgspec.Raw]:
    """Split a JSON array of events into raw items, each to be decoded on its own, so one bad
    item does not reject the others."""
    try:
        return _events_decoder.decode(body)
    except RecursionError:
        raise EventInvalid("$", "Nested too deeply") from None
