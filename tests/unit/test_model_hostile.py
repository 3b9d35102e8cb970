"""Decoding hostile bodies fails only with the errors the HTTP edge maps to 400/422."""

from __future__ import annotations

import contextlib
import json
from typing import Any

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


# Repeated keys. JSON texts are built from pairs, so objects can hold a key twice; keys and strings
# use the characters that could confuse a scan of the raw text (quote, colon, backslash, non-ASCII).
_TRICKY = 'ab":\\é\u2028 '


class _Obj(tuple[tuple[str, Any], ...]):
    """A JSON object as written: its pairs, repeats allowed."""


_scalars = (
    st.none() | st.booleans() | st.integers(-1000, 1000) | st.floats(allow_nan=False, allow_infinity=False)
)
_values = st.recursive(
    _scalars | st.text(_TRICKY, max_size=4),
    lambda children: (
        st.lists(children, max_size=3)
        | st.lists(st.tuples(st.text(_TRICKY, max_size=2), children), max_size=4).map(_Obj)
    ),
    max_leaves=12,
)
_objects = st.lists(st.tuples(st.text(_TRICKY, max_size=2), _values), max_size=4).map(_Obj)


def _write(value: Any, ascii_only: bool, space: str) -> str:
    if isinstance(value, _Obj):
        members = (
            f"{json.dumps(k, ensure_ascii=ascii_only)}{space}:{space}{_write(v, ascii_only, space)}"
            for k, v in value
        )
        return "{" + f",{space}".join(members) + "}"
    if isinstance(value, list):
        return "[" + f",{space}".join(_write(v, ascii_only, space) for v in value) + "]"
    return json.dumps(value, ensure_ascii=ascii_only)


def _repeated(value: Any) -> set[str]:
    """Keys that some object of ``value`` holds more than once."""
    if isinstance(value, _Obj):
        keys = [k for k, _ in value]
        return {k for k in keys if keys.count(k) > 1}.union(*(_repeated(v) for _, v in value))
    if isinstance(value, list):
        return set().union(*(_repeated(v) for v in value))
    return set()


@given(_objects, st.booleans(), st.sampled_from(["", " ", "\n  "]), st.sampled_from(["", "type", "eventId"]))
def test_a_repeated_key_at_any_depth_is_rejected_naming_it(
    data: _Obj, ascii_only: bool, space: str, twice: str
) -> None:
    head = [("patientId", "p"), ("type", "t"), ("ts", "2025-10-01T10:30:00Z"), ("eventId", "e-1")]
    top = _Obj([*head, *([(twice, "t")] if twice else []), ("data", data)])
    body = _write(top, ascii_only, space).encode()
    repeated = _repeated(top)
    if not repeated:
        event = decode_event(body)
        assert event.data == json.loads(body)["data"]
        return
    with pytest.raises(EventInvalid, match="appears more than once") as caught:
        decode_event(body)
    assert caught.value.detail.split("`")[1] in repeated
    assert caught.value.field.endswith(caught.value.detail.split("`")[1])


def test_repeated_keys_are_named_with_their_path() -> None:
    head = b'{"patientId":"p","type":"t","ts":"2025-10-01T10:30:00Z","data":'
    for data, field in [
        (b'{"a":1,"a":2}', "$.data.a"),
        (b'{"a":[0,{"b":{"c":1,"c":1}}]}', "$.data.a[1].b.c"),
        (b'{"x\\"y":1,"x\\u0022y":2}', '$.data.x"y'),  # the same key, written two ways
    ]:
        with pytest.raises(EventInvalid) as caught:
            decode_event(head + data + b"}")
        assert caught.value.field == field
    with pytest.raises(EventInvalid) as caught:
        decode_event(b'{"patientId":"p",' + head[1:] + b"{}}")
    assert caught.value.field == "$.patientId"
    # The processor reads what ingest stored before this check existed as it was accepted.
    assert decode_event(head + b'{"a":1,"a":2}}', unique_keys=False).data == {"a": 2}
