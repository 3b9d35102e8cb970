"""The event model's edge cases and event-id derivation."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from medevents.ids import _NAMESPACE, derive_event_id, uuid5
from medevents.model import MAX_DATA_DEPTH, Event, EventInvalid, decode_event

BASE: dict[str, Any] = {
    "patientId": "patient-123",
    "type": "vitals",
    "data": {"heartRate": 72},
    "ts": "2025-10-01T10:30:00Z",
}


def body(**changes: Any) -> bytes:
    return msgspec.json.encode({**BASE, **changes})


def test_old_demo_event_decodes() -> None:
    event = decode_event(body())
    assert event.patientId == "patient-123"
    assert event.ts == dt.datetime(2025, 10, 1, 10, 30, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    "changes",
    [
        {"patientId": ""},
        {"patientId": "x" * 257},
        {"patientId": "a\x00b"},
        {"patientId": "a\u202eb"},  # right-to-left override
        {"type": ""},
        {"type": "t" * 65},
        {"data": []},
        {"data": "text"},
        {"ts": "2025-10-01T10:30:00"},  # no offset
        {"ts": "yesterday"},
        {"eventId": ""},
        {"eventId": "has space"},
        {"eventId": "x" * 129},
        {"unknown": 1},
    ],
)
def test_invalid_events_are_rejected(changes: dict[str, Any]) -> None:
    with pytest.raises(msgspec.ValidationError):
        decode_event(body(**changes))


@pytest.mark.parametrize(
    "data",
    [
        {"big": 2**63},
        {"small": -(2**63) - 1},
        {"$where": 1},
        {"list": [{"$gt": 1}]},
    ],
)
def test_data_the_store_cannot_keep_is_rejected(data: dict[str, Any]) -> None:
    with pytest.raises(EventInvalid):
        decode_event(body(data=data))


def test_depth_limit() -> None:
    nested: dict[str, Any] = {}
    inner = nested
    for _ in range(MAX_DATA_DEPTH):
        inner["x"] = {}
        inner = inner["x"]
    with pytest.raises(EventInvalid, match="deeper"):
        decode_event(body(data=nested))
    very_deep = b'{"patientId":"p","type":"t","ts":"2025-10-01T10:30:00Z","data":' + b'{"a":' * 10000
    with pytest.raises((EventInvalid, msgspec.DecodeError)):
        decode_event(very_deep + b"1" + b"}" * 10001)


def test_printable_unicode_ids_are_accepted() -> None:
    for pid in ["2.16.840.1.113883", "a*b>c", "Zoë Ünal", "病人-1", "x" * 256]:
        assert decode_event(body(patientId=pid)).patientId == pid


def test_event_id_prefers_client_id_then_key_then_hash() -> None:
    event = decode_event(body())
    assert derive_event_id(decode_event(body(eventId="e-1")), "key") == "e-1"
    assert derive_event_id(event, "key-1") == "key-1"
    derived = derive_event_id(event)
    assert derived == derive_event_id(decode_event(body()))
    assert derived != derive_event_id(decode_event(body(type="labs")))


def test_same_instant_in_another_offset_is_the_same_event() -> None:
    a = decode_event(body(ts="2025-10-01T10:30:00Z"))
    b = decode_event(body(ts="2025-10-01T12:30:00+02:00"))
    assert derive_event_id(a) == derive_event_id(b)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text("abc", max_size=3), children, max_size=3)
    ),
    max_leaves=10,
)


@given(st.dictionaries(st.text("abcdef", min_size=1, max_size=4), json_values, max_size=5))
def test_key_order_does_not_change_the_id(data: dict[str, Any]) -> None:
    reversed_data = dict(reversed(list(data.items())))
    a = Event("p", "t", data, dt.datetime(2025, 1, 1, tzinfo=dt.UTC))
    b = Event("p", "t", reversed_data, dt.datetime(2025, 1, 1, tzinfo=dt.UTC))
    assert derive_event_id(a) == derive_event_id(b)


@given(st.text())
def test_fast_uuid5_is_the_standard_one(name: str) -> None:
    """Derived ids are a UUIDv5 under medevents' namespace, computed without UUID objects: the
    same string the standard library gives (ids already stored must keep matching)."""
    raw = name.encode("utf-8", "surrogatepass")
    assert uuid5(raw) == str(uuid.uuid5(_NAMESPACE, raw.decode("utf-8", "surrogatepass")))


def test_derived_id_is_stable() -> None:
    """The old demo's event keeps the id it had before (a change would break de-duplication
    against events stored by an earlier version)."""
    assert derive_event_id(decode_event(body())) == str(
        uuid.uuid5(
            _NAMESPACE,
            b'{"data":{"heartRate":72},"patientId":"patient-123","ts":"2025-10-01T10:30:00Z","type":"vitals"}'.decode(),
        )
    )
