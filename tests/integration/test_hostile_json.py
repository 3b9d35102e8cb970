"""Hostile request bodies: every one answered with a problem document naming the issue, none
published, and the service unharmed afterwards."""

from __future__ import annotations

from typing import Any

import httpx
import msgspec
import pytest
from nats.js import JetStreamContext

from medevents.subjects import patient_id, patient_token, token_of_stored

from .conftest import RunningIngest, stream_messages
from .hostile import EVENT, stream_count

JSON = {"Content-Type": "application/json"}
VALID = msgspec.json.encode(EVENT)
BASE = b'"type":"vitals","ts":"2025-10-01T10:30:00Z"'


def with_data(data: bytes) -> bytes:
    return b'{"patientId":"p-1",' + BASE + b',"data":' + data + b"}"


def assert_problem(response: httpx.Response, status: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, (status, response.text[:300])
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"].startswith("urn:medevents:problem:")
    assert body["title"] and body["detail"]
    if field is not None:
        assert body.get("field") == field, body
    return body


async def send(ingest: RunningIngest, body: bytes, path: str = "/events", **headers: str) -> httpx.Response:
    return await ingest.client.post(path, content=body, headers={**JSON, **headers})


async def test_every_truncation_of_a_valid_event_is_400(ingest: RunningIngest, js: JetStreamContext) -> None:
    for cut in range(len(VALID)):
        assert_problem(await send(ingest, VALID[:cut]), 400)
    assert await stream_count(js) == 0
    assert (await send(ingest, VALID)).status_code == 202


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"{'patientId': 'single quotes'}",
        b'{"patientId":"p","type":"v","data":{},"ts":"2025-10-01T10:30:00Z",}',  # trailing comma
        b"\xef\xbb\xbf" + VALID,  # a UTF-8 byte order mark
        VALID + b"garbage",
        VALID + VALID,
        b"\x00" * 64,
        b"\xff\xfe{\x00}\x00",  # UTF-16
        with_data(b'{"x":"\xff"}'),  # invalid UTF-8 inside a string (was a 500: UnicodeDecodeError)
        with_data(b'{"x":"\xc3"}'),  # truncated multi-byte sequence
        with_data(b'{"x":"\xed\xa0\x80"}'),  # an encoded surrogate
        with_data(b'{"x":"\\ud800"}'),  # a lone surrogate escape
        b'{"patientId":"\xf0\x9f\x98"' + b"," + BASE + b',"data":{}}',
        with_data(b'{"x":NaN}'),
        with_data(b'{"x":Infinity}'),
        with_data(b'{"x":-Infinity}'),
        with_data(b'{"x":0x10}'),
        with_data(b'{"x":01}'),
        with_data(b'{"x":undefined}'),
        with_data(b'{"x":1} /* comment */'),
        b"",
        b" ",
    ],
)
async def test_malformed_json_is_400(ingest: RunningIngest, js: JetStreamContext, body: bytes) -> None:
    body_problem = assert_problem(await send(ingest, body), 400)
    assert body_problem["type"] == "urn:medevents:problem:malformed-request"
    assert await stream_count(js) == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (with_data(b'{"x":1e400}'), None),  # overflows a double
        (with_data(b'{"x":-1e400}'), None),
        (with_data(b'{"x":123456789012345678901234567890}'), "data.x"),
        (with_data(b'{"x":-9223372036854775809}'), "data.x"),
        (with_data(b"[1]"), "data"),
        (with_data(b"null"), "data"),
        (with_data(b'{"$where":"1"}'), "data.$where"),
        (with_data(b'{"a\\u0000b":1}'), "data.a\x00b"),
        (b"[]", None),
        (b"null", None),
        (b"1", None),
        (b'"event"', None),
        (b'{"patientId":7,' + BASE + b',"data":{}}', "patientId"),
        (b'{"patientId":"p",' + BASE + b',"data":{},"__proto__":{}}', "__proto__"),
        (b'{"patientId":"p","type":"v","data":{},"ts":"yesterday"}', "ts"),
        (b'{"patientId":"p","type":"v","data":{},"ts":"2025-13-01T10:30:00Z"}', "ts"),
        (b'{"patientId":"p","type":"v","data":{},"ts":1759314600}', "ts"),
    ],
)
async def test_valid_json_invalid_event_is_422(
    ingest: RunningIngest, js: JetStreamContext, body: bytes, field: str | None
) -> None:
    assert_problem(await send(ingest, body), 422, field)
    assert await stream_count(js) == 0


async def test_extreme_but_legal_numbers_are_kept_exactly(
    ingest: RunningIngest, js: JetStreamContext
) -> None:
    data = (
        b'{"max":9223372036854775807,"min":-9223372036854775808,"big":1.7976931348623157e308,"tiny":5e-324}'
    )
    assert (await send(ingest, with_data(data))).status_code == 202
    [(_, _, payload, _)] = await stream_messages(js)
    assert payload == with_data(data), "the body is stored byte for byte"


async def test_deep_nesting(ingest: RunningIngest, js: JetStreamContext) -> None:
    depth = 10_000
    cases = [
        (with_data(b'{"a":' * depth + b"1" + b"}" * depth), "/events", 422),
        (with_data(b"[" * depth + b"]" * depth), "/events", 422),
        (b"[" * depth + b"]" * depth, "/events", 422),
        (with_data(b'{"a":' * depth), "/events", 422),  # deep and truncated: depth is found first
        (b"[" * depth + b"]" * depth, "/events/batch", 422),
        # Too deep to split into items: the whole batch is refused, before anything is published.
        (b"[" + with_data(b'{"a":' * depth + b"1" + b"}" * depth) + b"]", "/events/batch", 422),
    ]
    for body, path, status in cases:
        assert_problem(await send(ingest, body, path), status)
    # 64 levels (the store's limit with room to spare) is accepted, 65 is not.
    ok = with_data(b'{"a":' * 63 + b"1" + b"}" * 63)
    assert (await send(ingest, ok)).status_code == 202
    assert_problem(await send(ingest, with_data(b'{"a":' * 64 + b"1" + b"}" * 64)), 422)
    assert await stream_count(js) == 1


async def test_repeated_keys_are_422_naming_the_key(ingest: RunningIngest, js: JetStreamContext) -> None:
    """JSON leaves repeated keys undefined (msgspec keeps the last, other parsers the first): one of
    the values would be dropped silently, so a repeated key anywhere is refused, like an unknown one."""
    top = b'{"patientId":"first","patientId":"second",' + BASE + b',"data":{}}'
    nested = with_data(b'{"vitals":[{"hr":1},{"hr":72,"bp":"120/80","hr":73}]}')
    body = assert_problem(await send(ingest, top), 422, "patientId")
    assert "`patientId` appears more than once" in body["detail"]
    body = assert_problem(await send(ingest, nested), 422, "data.vitals[1].hr")
    assert "`hr` appears more than once" in body["detail"]
    # The same key in different objects, or as a value, is not a repeat.
    fine = with_data(b'{"hr":1,"x":{"hr":"hr"},"y":[{"hr":2},{"hr":3}],"z":"\\"hr\\":1,\\"hr\\":2"}')
    assert (await send(ingest, fine)).status_code == 202
    for content_type, joined in (
        ("application/json", b"[" + b",".join([VALID, nested, top]) + b"]"),
        ("application/x-ndjson", b"\n".join([VALID, nested, top])),
    ):
        response = await send(ingest, joined, "/events/batch", **{"Content-Type": content_type})
        assert response.status_code == 207, response.text
        items = response.json()["items"]
        assert [i["status"] for i in items] == ["queued", "error", "error"]
        assert [(i["error"]["status"], i["error"]["field"]) for i in items[1:]] == [
            (422, "data.vitals[1].hr"),
            (422, "patientId"),
        ]
    assert await stream_count(js) == 2  # `fine` and VALID (sent twice, the same event)


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        ("text/plain", 415),
        ("application/x-www-form-urlencoded", 415),
        ("multipart/form-data; boundary=x", 415),
        ("application/jsonx", 415),
        ("application/x-ndjson", 415),
        ("application/problem+json", 415),
        ("json", 415),
        ("", 415),
        ("APPLICATION/JSON", 202),
        ("application/json; charset=utf-8", 202),
    ],
)
async def test_content_types(
    ingest: RunningIngest, js: JetStreamContext, content_type: str, status: int
) -> None:
    response = await ingest.client.post("/events", content=VALID, headers={"Content-Type": content_type})
    if status == 202:
        assert response.status_code == 202
        assert await stream_count(js) == 1
    else:
        assert_problem(response, status)
        assert await stream_count(js) == 0


@pytest.mark.parametrize(
    "pid",
    [".", "*", ">", " ", "a b", "a.b", "events.>", "..", "a\u00a0b", "~", "~cA", "-",
     "\u05e9\u05dc\u05d5\u05dd", "\U0001f600" * 256],
)  # fmt: skip
async def test_subject_characters_in_patient_ids_are_contained(
    ingest: RunningIngest, js: JetStreamContext, pid: str
) -> None:
    """Wildcards and separators never reach the subject: each id has its own, single token."""
    assert (await send(ingest, msgspec.json.encode({**EVENT, "patientId": pid}))).status_code == 202
    assert (await send(ingest, msgspec.json.encode({**EVENT, "patientId": "victim"}))).status_code == 202
    [(_, subject, _, _), (_, other, _, _)] = await stream_messages(js)
    _, token = token_of_stored(subject)
    assert not set(token) & set(".*> \t\r\n")
    assert patient_id(token) == pid and token == patient_token(pid)
    assert other != subject


@pytest.mark.parametrize(
    "bad",
    [
        "\x00", "tab\there", "line\nbreak", "cr\rhere", "\x1b[31mred", "del\x7f", "\x85next-line",
        "\u200bzero-width", "rtl\u200fmark", "\u202eoverride", "\u2066isolate", "\ufeffbom",
        "line\u2028sep", "x" * 10 * 1024, "trailing-newline\n", "\n",
    ],
)  # fmt: skip
async def test_invisible_and_control_characters_are_rejected(
    ingest: RunningIngest, js: JetStreamContext, bad: str
) -> None:
    for field in ("patientId", "type"):
        assert_problem(await send(ingest, msgspec.json.encode({**EVENT, field: bad})), 422, field)
    for event_id in (bad, "ok\r\nNats-Expected-Stream: OTHER", "spa ce", "\u00e9"):
        assert_problem(
            await send(ingest, msgspec.json.encode({**EVENT, "eventId": event_id})), 422, "eventId"
        )
    assert await stream_count(js) == 0


async def test_batch_of_hostile_items_answers_per_item(ingest: RunningIngest, js: JetStreamContext) -> None:
    lines = [
        VALID,
        b"{",
        with_data(b'{"x":"\xff"}'),
        with_data(b'{"x":NaN}'),
        msgspec.json.encode({**EVENT, "patientId": "a\nb"}),
        msgspec.json.encode({**EVENT, "data": {"n": 2}}),
    ]
    response = await ingest.client.post(
        "/events/batch", content=b"\n".join(lines), headers={"Content-Type": "application/x-ndjson"}
    )
    assert response.status_code == 207
    result = response.json()
    assert [i["status"] for i in result["items"]] == ["queued", "error", "error", "error", "error", "queued"]
    assert [i["error"]["status"] for i in result["items"] if i["status"] == "error"] == [400, 400, 400, 422]
    assert await stream_count(js) == 2
    for body in (b"[" + VALID + b",", b"{}", b"[1,2]", b"[\xff]"):
        response = await send(ingest, body, "/events/batch")
        if response.status_code == 207:
            assert {i["status"] for i in response.json()["items"]} == {"error"}
        else:
            assert_problem(response, response.status_code)
            assert response.status_code in (400, 422)
    assert await stream_count(js) == 2
