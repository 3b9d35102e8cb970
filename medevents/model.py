"""The event and the messages built from it, with one prebuilt decoder and encoder per type.

An :class:`Event` is what a client posts (the old demo's shape plus an optional ``eventId``).
Unknown fields are rejected: a misspelt field silently dropped would be lost medical data.
"""

from __future__ import annotations

import datetime as dt
import json
import re
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


class _Rejected(Exception):
    """Raised deep in the walk over ``data``; each level adds its step to ``path`` on the way out,
    so the happy path builds no path strings."""

    def __init__(self, detail: str, step: str = "") -> None:
        self.detail = detail
        self.path = [step] if step else []


def _walk_data(value: dict[str, Any] | list[Any], depth: int) -> int:
    """Check a decoded ``data`` object or array; return how many object members it holds, at all
    levels. Scalars are checked inline: a call per leaf would cost more than the check."""
    members = 0
    items: Any
    if type(value) is dict:
        members = len(value)
        for key in value:
            if key[:1] == "$" or "\x00" in key:
                raise _Rejected("Keys may not start with `$` or contain NUL", f".{key}")
        items = value.items()
        step = ".{}"
    else:
        items = enumerate(value)
        step = "[{}]"
    if depth >= MAX_DATA_DEPTH and value:  # its items are one level deeper than allowed
        raise _Rejected(f"Nested deeper than {MAX_DATA_DEPTH} levels", step.format(next(iter(items))[0]))
    for name, item in items:
        kind = type(item)
        if kind is int:
            if not _INT64[0] <= item <= _INT64[1]:
                raise _Rejected("Integer outside the 64-bit range", step.format(name))
        elif kind is dict or kind is list:
            try:
                members += _walk_data(item, depth + 1)
            except _Rejected as exc:
                exc.path.append(step.format(name))
                raise
    return members


def _data_members(event: Event) -> int:
    try:
        return _walk_data(event.data, 1)
    except _Rejected as exc:
        raise EventInvalid("$.data" + "".join(reversed(exc.path)), exc.detail) from None


def check_event(event: Event) -> Event:
    """Reject what JSON allows but the store cannot keep; return the event unchanged."""
    _data_members(event)
    return event


# Every JSON string, with the colon that follows it when it is an object key. In valid JSON a `"`
# outside a string always opens one, so matching string after string from the left stays in step.
_STRING_OR_KEY = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"([ \t\r\n]*:)?')


def _object_keys(body: bytes) -> int:
    """How many object members valid JSON ``body`` holds, at all levels: its colons outside strings."""
    if b'\\"' not in body:
        # No escaped quote: every `"` delimits a string, so the even pieces are what lies outside.
        return b"".join(body.split(b'"')[::2]).count(b":")
    keys = _STRING_OR_KEY.findall(body)
    return len(keys) - keys.count(b"")


class _Repeated(dict[str, Any]):
    """An object of the slow path's parse that had ``key`` more than once."""

    key = ""


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    repeated = _Repeated(obj)
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            repeated.key = key
            break
        seen.add(key)
    return repeated


def _first_repeated(value: Any, path: str) -> EventInvalid | None:
    if isinstance(value, _Repeated):
        return EventInvalid(f"{path}.{value.key}", f"Key `{value.key}` appears more than once")
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for step, item in items:
        found = _first_repeated(item, f"{path}.{step}" if isinstance(step, str) else f"{path}[{step}]")
        if found is not None:
            return found
    return None


def _reject_repeated_keys(body: bytes, event: Event, data_members: int) -> None:
    """Raise :class:`EventInvalid` naming a key that ``body`` has twice in one object.

    msgspec keeps the last of repeated keys (it cannot detect them), which would silently drop a
    value that another parser downstream might pick instead. Fast path: the body's object
    members, counted with byte operations in C, equal the members of the decoded event, which holds
    each key once. Only when they differ does the stdlib parser find the repeated key and its path.
    """
    if _object_keys(body) == 4 + (event.eventId is not UNSET) + data_members:
        return
    try:
        found = _first_repeated(json.loads(body, object_pairs_hook=_pairs), "$")
    except ValueError:  # not reachable for a body msgspec accepted; never a 500 all the same
        found = EventInvalid("$", "A key appears more than once in an object")
    if found is not None:
        raise found


def decode_event(body: bytes, *, unique_keys: bool = True) -> Event:
    """Decode and check one event. Raises msgspec.DecodeError (malformed JSON),
    msgspec.ValidationError or :class:`EventInvalid` (valid JSON, invalid event; a key repeated
    in one object, unless ``unique_keys`` is off)."""
    try:
        event = _event_decoder.decode(body)
    except RecursionError:
        raise EventInvalid("$", "Nested too deeply") from None
    except UnicodeDecodeError as exc:
        # msgspec raises this, not DecodeError, for invalid UTF-8 inside a string of a free-form
        # value (``data``); it is malformed input all the same.
        raise msgspec.DecodeError(f"JSON is malformed: invalid UTF-8 (byte {exc.start})") from None
    members = _data_members(event)
    if unique_keys:
        _reject_repeated_keys(body, event, members)
    return event


def decode_events(body: bytes) -> list[msgspec.Raw]:
    """Split a JSON array of events into raw items, each to be decoded on its own, so one bad
    item does not reject the others."""
    try:
        return _events_decoder.decode(body)
    except RecursionError:
        raise EventInvalid("$", "Nested too deeply") from None
