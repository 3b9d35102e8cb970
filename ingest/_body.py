"""Reading a request body within a size cap and a time limit, with the right content type."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["BodyError", "BodyReader", "media_type"]

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]

_SWEEP_S = 0.1  # how often reads past their deadline are stopped


class BodyError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def media_type(content_type: str) -> str:
    """``application/json; charset=utf-8`` -> ``application/json``."""
    return content_type.split(";", 1)[0].strip().lower()


class BodyReader:
    """Reads whole bodies from the ASGI ``receive`` channel: 413 past the size limit (told by
    Content-Length before reading when the client sends it), 408 when the body does not arrive
    within ``timeout_s`` (a slow client must not hold a connection and memory forever).

    The time limit is kept by one sweeper task for every request instead of a timer per request
    (``asyncio.timeout`` cost about 5 % of a request's CPU): a read past its deadline has its task
    cancelled, and the cancellation is turned into the 408. Most bodies are in the server's buffer
    when the handler starts, so the read never waits and the sweeper never sees it.
    """

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._reading: dict[asyncio.Task[Any], float] = {}  # task -> deadline
        self._expired: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep(), name="body-deadlines")

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(_SWEEP_S)
            now = time.monotonic()
            for task, deadline in list(self._reading.items()):
                if deadline <= now and task not in self._expired:
                    self._expired.add(task)
                    task.cancel()

    async def read(self, receive: Receive, declared: str | None, limit: int) -> bytes:
        """The whole body, or :class:`BodyError` (400, 408, 413)."""
        if declared is not None:
            if not declared.isdigit():
                raise BodyError(400, "Content-Length is not a number")
            if int(declared) > limit:
                raise BodyError(413, f"the body is {declared} bytes; the limit is {limit}")
        task = asyncio.current_task()
        assert task is not None
        self._reading[task] = time.monotonic() + self.timeout_s
        try:
            message = await receive()
            if message["type"] != "http.request":
                raise BodyError(400, "the client disconnected before sending the whole body")
            body: bytes = message.get("body", b"")
            if len(body) > limit:
                raise BodyError(413, f"the body exceeds the limit of {limit} bytes")
            if not message.get("more_body", False):
                return body
            chunks = [body]
            size = len(body)
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    raise BodyError(400, "the client disconnected before sending the whole body")
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise BodyError(413, f"the body exceeds the limit of {limit} bytes")
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)
        except asyncio.CancelledError:
            if task not in self._expired:
                raise
            self._expired.discard(task)
            task.uncancel()
            raise BodyError(408, f"the body did not arrive within {self.timeout_s:g} s") from None
        finally:
            del self._reading[task]
