"""Hostile HTTP: oversized and endless bodies, slow-loris bodies, clients that vanish mid-body, and
header injection. Spoken over a raw socket, since polite clients refuse to misbehave."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import msgspec
import pytest
from nats.js import JetStreamContext

from medevents.config import MongoSettings, NatsSettings

from .conftest import RunningIngest, running_ingest, stream_messages
from .hostile import EVENT, close_raw, open_raw, read_response, request_head, stream_count

VALID = msgspec.json.encode(EVENT)
MiB = 1024 * 1024


@pytest.fixture
async def impatient(
    nats_settings: NatsSettings, mongo_settings: MongoSettings
) -> AsyncIterator[RunningIngest]:
    """An ingest with a 1 s body timeout."""
    async with running_ingest(nats_settings, mongo_settings, body_timeout_s=1.0) as running:
        yield running


async def test_declared_10_mib_body_is_refused_before_it_is_sent(
    ingest: RunningIngest, js: JetStreamContext
) -> None:
    reader, writer = await open_raw(ingest.url)
    writer.write(
        request_head("/events", {"Content-Type": "application/json", "Content-Length": str(10 * MiB)})
    )
    await writer.drain()
    response = await read_response(reader, timeout=10)  # not a byte of the body was sent
    await close_raw(writer)
    assert response.status == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert str(10 * MiB) in response.json()["detail"]
    assert await stream_count(js) == 0


async def test_chunked_body_is_cut_off_at_the_limit(ingest: RunningIngest, js: JetStreamContext) -> None:
    """Without Content-Length the server counts: 1 MiB in (the limit is 256 KiB), the body not
    finished, and the answer is already 413: it did not wait for the rest."""
    reader, writer = await open_raw(ingest.url)
    writer.write(
        request_head("/events", {"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
    )
    chunk = b"[" * 65536
    for _ in range(16):
        writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        await writer.drain()
    response = await read_response(reader, timeout=10)
    await close_raw(writer)
    assert response.status == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert await stream_count(js) == 0


async def test_10_mib_body_through_a_normal_client(ingest: RunningIngest, js: JetStreamContext) -> None:
    body = b'{"patientId":"p","type":"v","ts":"2025-10-01T10:30:00Z","data":{"x":"' + b"a" * 10 * MiB + b'"}}'
    try:
        response = await ingest.client.post(
            "/events", content=body, headers={"Content-Type": "application/json"}
        )
    except httpx.WriteError:
        pass  # the server answered and closed before the client finished writing: also a refusal
    else:
        assert response.status_code == 413
    for_batch = await ingest.client.post(
        "/events/batch", content=b"[" + b" " * 17 * MiB + b"]", headers={"Content-Type": "application/json"}
    )
    assert for_batch.status_code == 413
    assert await stream_count(js) == 0
    assert (await ingest.client.get("/readyz")).status_code == 200


@pytest.mark.parametrize("length", ["-1", "abc", "1e3", "0x10", " 12", "99999999999999999999999"])
async def test_lying_content_length(ingest: RunningIngest, js: JetStreamContext, length: str) -> None:
    reader, writer = await open_raw(ingest.url)
    writer.write(
        request_head("/events", {"Content-Type": "application/json", "Content-Length": length}) + VALID
    )
    await writer.drain()
    try:
        response = await read_response(reader, timeout=10)
    except asyncio.IncompleteReadError:
        response = None  # the HTTP parser dropped the connection: nothing was accepted either
    await close_raw(writer)
    if response is not None:
        assert 400 <= response.status < 500
    assert await stream_count(js) == 0


async def test_slow_loris_body_gets_408(impatient: RunningIngest, js: JetStreamContext) -> None:
    reader, writer = await open_raw(impatient.url)
    writer.write(
        request_head("/events", {"Content-Type": "application/json", "Content-Length": str(len(VALID))})
    )
    await writer.drain()
    loop = asyncio.get_running_loop()
    started = loop.time()
    response = None
    for byte in VALID:  # one byte every 0.2 s: the whole body would take ~15 s
        writer.write(bytes([byte]))
        await writer.drain()
        try:
            response = await read_response(reader, timeout=0.2)
            break
        except TimeoutError:
            continue
    await close_raw(writer)
    assert response is not None, "the server waited for the whole slow body"
    assert response.status == 408
    assert response.headers["content-type"] == "application/problem+json"
    assert loop.time() - started < 10
    assert await stream_count(js) == 0


async def test_slow_chunked_body_gets_408(impatient: RunningIngest, js: JetStreamContext) -> None:
    reader, writer = await open_raw(impatient.url)
    writer.write(
        request_head("/events", {"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
    )
    writer.write(b'5\r\n{"pat\r\n')
    await writer.drain()
    response = await read_response(reader, timeout=10)  # and never another chunk
    await close_raw(writer)
    assert response.status == 408
    assert await stream_count(js) == 0


async def test_client_vanishing_mid_body(ingest: RunningIngest, js: JetStreamContext) -> None:
    """Many clients send half a body and hang up; nothing is published and the service serves on."""
    for _ in range(20):
        _reader, writer = await open_raw(ingest.url)
        writer.write(
            request_head("/events", {"Content-Type": "application/json", "Content-Length": str(len(VALID))})
            + VALID[: len(VALID) // 2]
        )
        await writer.drain()
        writer.transport.abort()  # a reset, not a polite close
    await asyncio.sleep(0.2)
    assert await stream_count(js) == 0
    response = await ingest.client.post(
        "/events", content=VALID, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 202
    assert (await ingest.client.get("/readyz")).status_code == 200


@pytest.mark.parametrize(
    "key",
    [
        b"abc\rdef",  # a bare CR inside a value
        b"abc\ndef",  # a bare LF: would start a header of its own if passed on
        b"abc\r\nNats-Expected-Stream: OTHER",  # the injection lands as its own header line
        b"\xc3\xa9t\xc3\xa9",  # non-ASCII (UTF-8)
        b"\xff\xfe",
        b"caf\xe9",  # Latin-1
        b"key with space",
        b"\x00",
        b"k" * 129,
    ],
)
async def test_header_injection_through_idempotency_key(
    ingest: RunningIngest, js: JetStreamContext, key: bytes
) -> None:
    """An Idempotency-Key becomes the NATS header Nats-Msg-Id: anything but 1-128 visible ASCII
    characters is refused (422 from us, or 400 from the HTTP parser), never published."""
    reader, writer = await open_raw(ingest.url)
    writer.write(
        b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + b"Idempotency-Key: " + key + b"\r\n"
        + f"Content-Length: {len(VALID)}\r\n\r\n".encode() + VALID
    )  # fmt: skip
    await writer.drain()
    try:
        response = await read_response(reader, timeout=10)
    except asyncio.IncompleteReadError:
        response = None
    await close_raw(writer)
    if b"\r\n" in key:
        # Two header lines: the key itself ("abc") is valid, and the extra header is an HTTP
        # header the service ignores; it never reaches NATS.
        assert response is not None and response.status == 202
        [(_, _, _, headers)] = await stream_messages(js)
        assert headers == {"Nats-Msg-Id": "abc"}
        return
    assert response is None or response.status in (400, 422), response
    if response is not None and response.status == 422:
        assert response.json()["field"] == "Idempotency-Key"
    assert await stream_count(js) == 0


async def test_visible_ascii_key_is_passed_on_exactly(ingest: RunningIngest, js: JetStreamContext) -> None:
    key = "a:b/c?d=e&f%20~!" + "x" * 100
    response = await ingest.client.post(
        "/events", content=VALID, headers={"Content-Type": "application/json", "Idempotency-Key": key}
    )
    assert response.status_code == 202 and response.json()["eventId"] == key
    [(_, _, _, headers)] = await stream_messages(js)
    assert headers == {"Nats-Msg-Id": key}


async def test_many_requests_on_one_keep_alive_connection_with_garbage_between(
    ingest: RunningIngest, js: JetStreamContext
) -> None:
    """Request smuggling style input: a body that holds another request is just a bad body."""
    smuggled = request_head(
        "/events", {"Content-Type": "application/json", "Content-Length": str(len(VALID))}
    )
    body = VALID[:-1] + b"}" + smuggled + VALID
    reader, writer = await open_raw(ingest.url)
    writer.write(
        request_head("/events", {"Content-Type": "application/json", "Content-Length": str(len(body))}) + body
    )
    await writer.drain()
    response = await read_response(reader)
    await close_raw(writer)
    assert response.status == 400
    assert await stream_count(js) == 0
