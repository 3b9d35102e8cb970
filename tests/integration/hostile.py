"""Helpers for the hostile-input tests: raw HTTP/1.1 over an asyncio socket, for what a polite
client library refuses to send (slow bodies, lies in Content-Length, half requests)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import msgspec
from nats.js import JetStreamContext

EVENT: dict[str, Any] = {
    "patientId": "patient-123",
    "type": "vitals",
    "data": {"heartRate": 72},
    "ts": "2025-10-01T10:30:00Z",
}


class RawResponse(msgspec.Struct):
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return msgspec.json.decode(self.body)


def request_head(path: str, headers: dict[str, str], method: str = "POST") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def read_response(reader: asyncio.StreamReader, timeout: float = 30.0) -> RawResponse:
    """One HTTP/1.1 response (Content-Length framed, as uvicorn sends problems)."""
    async with asyncio.timeout(timeout):
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in header_lines:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        body = await reader.readexactly(length) if length else b""
    return RawResponse(int(status_line.split()[1]), headers, body)


async def open_raw(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


async def close_raw(writer: asyncio.StreamWriter) -> None:
    writer.close()
    # The server may already have reset a connection it gave up on.
    with contextlib.suppress(ConnectionError, OSError):
        await writer.wait_closed()


async def stream_count(js: JetStreamContext) -> int:
    return int((await js.stream_info("EVENTS")).state.messages)
