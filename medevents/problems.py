"""RFC 9457 problem documents (``application/problem+json``) with stable types."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

__all__ = ["PROBLEM_TYPE", "ProblemResponse", "http_exception_handler", "problem"]

PROBLEM_TYPE = "application/problem+json"
_BASE = "urn:medevents:problem:"
_encoder = msgspec.json.Encoder()

# status -> (stable type slug, title)
_GENERIC = {
    400: ("malformed-request", "Malformed request"),
    401: ("unauthorized", "Authentication required"),
    403: ("forbidden", "Forbidden"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    408: ("request-timeout", "Request body not received in time"),
    413: ("payload-too-large", "Payload too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    422: ("validation-error", "Invalid event"),
    429: ("rate-limited", "Too many requests"),
    503: ("unavailable", "Service unavailable"),
}


class ProblemResponse(Response):
    media_type = PROBLEM_TYPE


def problem(
    status: int,
    detail: str,
    *,
    slug: str | None = None,
    title: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> ProblemResponse:
    default_slug, default_title = _GENERIC.get(status, ("error", "Error"))
    body = {
        "type": _BASE + (slug or default_slug),
        "title": title or default_title,
        "status": status,
        "detail": detail,
        **extra,
    }
    return ProblemResponse(_encoder.encode(body), status_code=status, headers=headers)


async def http_exception_handler(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (unknown route, wrong method) as problem documents."""
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers) if exc.headers else None
    return problem(exc.status_code, str(exc.detail), headers=headers)
