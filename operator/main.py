"""The kopf operator: reconciles EventPipeline resources and scales processors from stream lag.

``medevents operator`` calls :func:`run`; tests call :func:`operate` inside their own event loop.
"""

from __future__ import annotations

import asyncio

import kopf

from medevents import logs
from medevents.config import LogSettings, OperatorSettings, load

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
    await kopf.operator(
        registry=build_registry(context),
        memo=kopf.Memo(),
        stop_flag=stop_flag,
        ready_flag=ready_flag,
        **_kopf_options(settings),  # type: ignore[arg-type]
    )


def run() -> None:
    """``medevents operator``: settings from the environment, JSON logs, kopf until SIGTERM."""
    settings = load(OperatorSettings)
    logs.configure(load(LogSettings), "operator")
    asyncio.run(operate(settings))
