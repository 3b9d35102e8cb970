"""The kopf operator: reconciles EventPipeline resources and scales processors from stream lag.

``medevents operator`` calls :func:`run`; tests call :func:`operate` inside their own event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import kopf
from prometheus_client import start_http_server

from medevents import logs, tracing
from medevents.config import LogSettings, OperatorSettings, TracingSettings, load

from .handlers import OperatorContext, build_registry

__all__ = ["OperatorContext", "build_registry", "operate", "run"]


def _kopf_options(settings: OperatorSettings) -> dict[str, object]:
    namespaces = settings.namespace_patterns
    return {
        "clusterwide": not namespaces,
        "namespaces": namespaces,
        "standalone": settings.standalone,
        "peering_name": None if settings.standalone else settings.peering,
        "liveness_endpoint": f"http://0.0.0.0:{settings.liveness_port}/healthz"
        if settings.liveness_port
        else None,
    }


async def operate(
    settings: OperatorSettings,
    *,
    stop_flag: asyncio.Event | None = None,
    ready_flag: asyncio.Event | None = None,
) -> None:
    """Run the operator in the running event loop until ``stop_flag`` is set."""
    context = OperatorContext(settings)
    with _metrics_server(settings, context):
        await kopf.operator(
            registry=build_registry(context),
            memo=kopf.Memo(),
            stop_flag=stop_flag,
            ready_flag=ready_flag,
            **_kopf_options(settings),  # type: ignore[arg-type]
        )


@contextlib.contextmanager
def _metrics_server(settings: OperatorSettings, context: OperatorContext) -> Iterator[None]:
    """``/metrics`` on ``OPERATOR_METRICS_PORT`` (prometheus_client's own server, in a thread)."""
    if not settings.metrics_port:
        yield
        return
    server, thread = start_http_server(settings.metrics_port, registry=context.metrics.registry)
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def run() -> None:
    """``medevents operator``: settings from the environment, JSON logs, kopf until SIGTERM."""
    settings = load(OperatorSettings)
    tracing_settings = load(TracingSettings)
    logs.configure(load(LogSettings), "operator")
    tracing.configure(tracing_settings, "medevents-operator")
    try:
        asyncio.run(operate(settings))
    finally:
        tracing.shutdown()
