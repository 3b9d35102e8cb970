"""The health routes every service serves: the old demo's ``/health``, Kubernetes' ``/livez`` and
``/readyz``, and Prometheus' ``/metrics``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import msgspec
from prometheus_client import CollectorRegistry
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from medevents import metrics
from medevents.problems import problem

__all__ = ["Readiness", "Warnings", "probe_routes"]

# Returns the reasons the service is not ready; empty when it is.
Readiness = Callable[[], Awaitable[list[str]]]
# Returns what is wrong without making the service unready (shown by a ready ``/readyz``).
Warnings = Callable[[], list[str]]
_encoder = msgspec.json.Encoder()


def probe_routes(
    service: str, readiness: Readiness, registry: CollectorRegistry, warnings: Warnings | None = None
) -> list[Route]:
    health_body = _encoder.encode({"status": "ok", "service": service})

    async def health(request: Request) -> Response:
        return Response(health_body, media_type="application/json")

    async def livez(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    async def readyz(request: Request) -> Response:
        reasons = await readiness()
        if reasons:
            return problem(503, "; ".join(reasons), slug="not-ready", title="Not ready", reasons=reasons)
        noted = warnings() if warnings else []
        body = _encoder.encode({"status": "ready", "warnings": noted}) if noted else b'{"status":"ready"}'
        return Response(body, media_type="application/json")

    async def metrics_endpoint(request: Request) -> Response:
        return Response(metrics.render(registry), media_type=metrics.CONTENT_TYPE_LATEST)

    return [
        Route("/health", health, methods=["GET"]),
        Route("/livez", livez, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
    ]
