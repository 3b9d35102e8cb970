"""A bare Starlette app that reads the body and answers ``202`` without validating or publishing:
the baseline of benchmark 1, served by uvicorn with the ingest service's own settings.

Run as ``python -m bench._bare PORT WORKERS`` from the repository root.
"""

from __future__ import annotations

import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

__all__ = ["create_app", "main"]

# The same size and shape as ingest's answer.
_ACCEPTED = b'{"status":"queued","eventId":"00000000-0000-0000-0000-000000000000","duplicate":false}'


async def _post_event(request: Request) -> Response:
    await request.body()
    return Response(_ACCEPTED, 202, media_type="application/json")


async def _health(request: Request) -> Response:
    return Response(b'{"status":"ok","service":"bare"}', media_type="application/json")


def create_app() -> Starlette:
    """The bare app (uvicorn factory, one per worker)."""
    return Starlette(
        routes=[
            Route("/events", _post_event, methods=["POST"]),
            Route("/health", _health, methods=["GET"]),
            Route("/readyz", _health, methods=["GET"]),
        ]
    )


def main(port: int, workers: int) -> None:
    """Serve with exactly the uvicorn options of ``medevents.ingest.server.serve``."""
    uvicorn.run(
        "bench._bare:create_app",
        factory=True,
        host="127.0.0.1",
        port=port,
        workers=workers,
        loop="uvloop",
        http="httptools",
        log_config=None,
        access_log=False,
        server_header=False,
    )


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
