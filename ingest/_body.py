"""Reading a request body within a size cap and a time limit, with the right content type."""

from __future__ import annotations

import asyncio

from starlette.requests import ClientDisconnect, Request

__all__ = ["BodyError", "media_type", "read_body"]


class BodyError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The whole body, or :class:`BodyError`: 413 past ``limit`` bytes (told by Content-Length
    before reading when the client sends it), 408 when it does not arrive within ``timeout``."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BodyError(400, "Content-Length is not a number")
        if int(declared) > limit:
            raise BodyError(413, f"the body is {declared} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise BodyError(413, f"the body exceeds the limit of {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise BodyError(408, f"the body did not arrive within {timeout:g} s") from None
    except ClientDisconnect:
        raise BodyError(400, "the client disconnected before sending the whole body") from None
    return b"".join(chunks)
