"""A minimal HTTP/1.1 keep-alive client on asyncio, so the load generator is not the bottleneck.

One :class:`Connection` sends one request at a time and reuses its socket; responses are parsed by
``httptools`` (the C parser uvicorn uses). httpx costs several times more CPU per request, which on
a 2-core machine would measure the client instead of the server (see docs/BENCHMARKS.md).
"""

from __future__ import annotations

import asyncio
from typing import cast
from urllib.parse import urlsplit

import httptools

__all__ = ["Connection", "HttpError", "Response", "Target", "parse_target"]


class HttpError(Exception):
    """The request got no HTTP response; ``kind`` names why (``connect``, ``closed``, ``timeout``,
    ``protocol``)."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


class Target:
    """Where requests go: host, port and the ``Host`` header."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.host_header = f"{host}:{port}".encode()


def parse_target(url: str) -> Target:
    """``http://host:port`` -> :class:`Target` (only plain HTTP: the tool measures, it does not
    cross networks)."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"expected http://host:port, got {url!r}")
    return Target(parts.hostname, parts.port or 80)


class Response:
    """Status, body and the headers the caller cares about (lower-cased names)."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, body: bytes, headers: dict[bytes, bytes]) -> None:
        self.status = status
        self.body = body
        self.headers = headers


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[Response] | None = None
        self.body: list[bytes] = []
        self.headers: dict[bytes, bytes] = {}
        self.closed = False

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(HttpError("protocol", str(exc)))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(HttpError("closed", "the server closed the connection"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        response = Response(self.parser.get_status_code(), b"".join(self.body), self.headers)
        self.body, self.headers = [], {}
        if not self.parser.should_keep_alive() and self.transport is not None:
            self.transport.close()
            self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(response)

    def _fail(self, exc: HttpError) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)


class Connection:
    """One keep-alive connection; reconnects when the server closed it."""

    def __init__(self, target: Target, timeout: float = 30.0) -> None:
        self._target = target
        self._timeout = timeout
        self._protocol: _Protocol | None = None

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        try:
            _, protocol = await loop.create_connection(_Protocol, self._target.host, self._target.port)
        except OSError as exc:
            raise HttpError("connect", exc.strerror or type(exc).__name__) from None
        return protocol

    async def request(self, method: bytes, path: bytes, body: bytes = b"", headers: bytes = b"") -> Response:
        """Send one request and return its response. ``headers`` are complete header lines
        (``b"Name: value\\r\\n"``), sent as they are."""
        protocol = self._protocol
        if protocol is None or protocol.closed:
            protocol = self._protocol = await self._connect()
        assert protocol.transport is not None
        waiter: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        protocol.waiter = waiter
        head = b"%s %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n%s\r\n" % (
            method,
            path,
            self._target.host_header,
            len(body),
            headers,
        )
        protocol.transport.write(head + body)
        try:
            async with asyncio.timeout(self._timeout):
                return await waiter
        except TimeoutError:
            self.close()
            raise HttpError("timeout", f"no response within {self._timeout:g} s") from None
        except HttpError:
            self.close()
            raise

    def close(self) -> None:
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()
        self._protocol = None
