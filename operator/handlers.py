"""The kopf handlers, registered on a registry of their own (tests build one per operator run).

- login: the API URL from ``OPERATOR_KUBE_API_URL``, else the pod's service account, else the
  kubeconfig; the same credentials feed the operator's own client (:class:`Kube`);
- startup: production kopf settings (own finalizer, server-side watch timeout, warnings posted as
  Kubernetes events, peering, no cluster observation when the namespaces are named exactly);
- one daemon per EventPipeline: its :class:`PipelineLoop`, stopped when the object goes away.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import kopf

from medevents.config import OperatorSettings

from ._metrics import PipelineMetrics
from .kube import Kube
from .pipeline import PipelineLoop

__all__ = ["FINALIZER", "GROUP", "OperatorContext", "build_registry"]

GROUP, VERSION, PLURAL = "medevents.io", "v1alpha1", "eventpipelines"
FINALIZER = "medevents.io/operator"
ANNOTATIONS_PREFIX = "medevents.io"


@dataclass
class OperatorContext:
    """What every handler shares (kopf copies the memo per object, not this object)."""

    settings: OperatorSettings
    kube: Kube | None = None
    loops: dict[str, PipelineLoop] = field(default_factory=dict)
    metrics: PipelineMetrics = field(default_factory=PipelineMetrics)


def _connection(ours: OperatorSettings, **kwargs: Any) -> kopf.ConnectionInfo | None:
    if ours.kube_api_url:
        return kopf.ConnectionInfo(server=ours.kube_api_url, insecure=ours.kube_insecure or None)
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


def build_registry(context: OperatorContext) -> kopf.OperatorRegistry:
    """A registry with the operator's handlers bound to ``context``."""
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    async def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        info = _connection(context.settings, **kwargs)
        if info is not None:
            if context.kube is not None:
                await context.kube.close()
            context.kube = Kube(info, context.settings.request_timeout_s)
        return info

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.persistence.finalizer = FINALIZER
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATIONS_PREFIX)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=ANNOTATIONS_PREFIX)
        settings.watching.server_timeout = context.settings.watch_server_timeout_s
        settings.watching.client_timeout = context.settings.watch_client_timeout_s
        settings.posting.level = logging.WARNING  # kopf's own warnings and errors become events
        settings.peering.name = context.settings.peering
        settings.peering.standalone = context.settings.standalone
        settings.peering.mandatory = not context.settings.standalone
        # Namespaces named exactly (the chart): nothing to observe, and the namespaced Role forbids
        # listing namespaces or CRDs; kopf would retry each 403 for ~54 s before falling back to the
        # names given, serving nothing meanwhile. The CRDs must exist before the operator starts.
        settings.scanning.disabled = context.settings.exact_namespaces

    @kopf.on.cleanup(registry=registry)
    async def close(**_: Any) -> None:
        if context.kube is not None:
            await context.kube.close()
            context.kube = None

    @kopf.daemon(GROUP, VERSION, PLURAL, registry=registry, cancellation_timeout=30.0)
    async def pipeline(
        body: kopf.Body, name: str, namespace: str | None, stopped: kopf.DaemonStopped, **_: Any
    ) -> None:
        assert namespace is not None  # EventPipeline is namespaced
        if context.kube is None:
            raise kopf.TemporaryError("not logged in to the Kubernetes API yet", delay=2)

        def event(type_: str, reason: str, message: str) -> None:
            kopf.event(body, type=type_, reason=reason, message=message[:1000])

        loop = PipelineLoop(context.kube, namespace, name, event, context.metrics)
        context.loops[f"{namespace}/{name}"] = loop
        try:
            await loop.run(body, stopped)
        finally:
            context.loops.pop(f"{namespace}/{name}", None)
            context.metrics.forget(namespace, name)

    @kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry, optional=True)
    def deleted(name: str, namespace: str | None, logger: kopf.Logger, **_: Any) -> None:
        # The stream and its events stay: deleting the custom resource must never delete data.
        logger.info(f"EventPipeline {namespace}/{name} deleted; stream EVENTS and its consumers are kept")

    return registry
