"""Decoding hostile bodies fails only with the errors the HTTP edge maps to 400/422."""

from __future__ import annotations

import contextlib

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from medevents.model import EventInvalid, decode_event

_HEAD = b'{"patientId":"p","type":"v","ts":"2025-10-01T10:30:00Z","data":'


@pytest.mark.parametrize("raw", [b'{"x":"\xff"}', b'{"\xff":1}', b'{"x":["\xc3"]}', b'{"x":"\xed\xa0\x80"}'])
def test_invalid_utf8_in_data_is_a_decode_error(raw: bytes) -> None:
    with pytest.raises(msgspec.DecodeError, match=r"UTF-8|malformed"):
        decode_event(_HEAD + raw + b"}")


@given(st.binary(max_size=300))
def test_any_bytes_decode_or_fail_cleanly(body: bytes) -> None:
    # ValidationError is a DecodeError; anything else (a 500 at the edge) fails the test.
    with contextlib.suppress(msgspec.DecodeError, EventInvalid):
        decode_event(body)


@given(st.binary(max_size=60))
def test_any_bytes_inside_data_decode_or_fail_cleanly(inner: bytes) -> None:
    with contextlib.suppress(msgspec.DecodeError, EventInvalid):
        decode_event(_HEAD + b'{"k":"' + inner + b'"}}')


_EVENT = {"patientId": "p", "type": "v", "data": {}, "ts": "2025-10-01T10:30:00Z"}


@given(st.text(max_size=20), st.sampled_from(["patientId", "type", "eventId"]))
def test_accepted_identifiers_hold_no_control_character(value: str, field: str) -> None:
    """Python's `$` matches before a final newline; the patterns must not let "id\\n" through."""
    try:
        event = decode_event(msgspec.json.encode({**_EVENT, field: value}))
    except msgspec.ValidationError:
        return
    accepted = getattr(event, field)
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in accepted), repr(accepted)


@pytest.mark.parametrize("field", ["patientId", "type", "eventId"])
def test_a_trailing_newline_is_refused(field: str) -> None:
    with pytest.raises(msgspec.ValidationError):
        decode_event(msgspec.json.encode({**_EVENT, field: "id\n"}))
