"""The OpenTelemetry SDK side of :mod:`medevents.tracing`, imported only when tracing is on (the
``otel`` extra): the tracer provider, its exporters, and the processor that keeps error texts
out of exported spans."""

from __future__ import annotations

import re

from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Status

from medevents.config import SettingsError, TracingSettings

__all__ = ["provider"]

_WORD = re.compile(r"[A-Za-z_][\w.]*")


def provider(settings: TracingSettings, service: str) -> TracerProvider:
    """A tracer provider for ``service`` with the exporters ``settings`` name, each behind a
    batch processor (``OTEL_BSP_*``) and :class:`KeepTypesOnly`. The sampler comes from
    ``OTEL_TRACES_SAMPLER`` (default: parent-based, always on), the resource from
    ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` over the component's default name."""
    named = settings.service_name or "service.name=" in settings.resource_attributes
    resource = Resource.create({} if named else {"service.name": service})
    result = TracerProvider(resource=resource)
    for name in settings.exporters:
        exporter = ConsoleSpanExporter() if name == "console" else _otlp(settings)
        result.add_span_processor(KeepTypesOnly(BatchSpanProcessor(exporter)))
    return result


def _otlp(settings: TracingSettings) -> SpanExporter:
    if settings.protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found]
                OTLPSpanExporter as GrpcExporter,
            )
        except ImportError:
            raise SettingsError(
                f"{settings.protocol_variable}: grpc needs opentelemetry-exporter-otlp-proto-grpc "
                "installed; or use http/protobuf (the default)"
            ) from None
        exporter: SpanExporter = GrpcExporter()
        return exporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


class KeepTypesOnly(SpanProcessor):
    """In front of an exporter's processor: a span with an error description or a recorded
    exception is passed on with the exception's type only (messages can quote input). Spans
    without either pass through untouched."""

    def __init__(self, inner: SpanProcessor) -> None:
        self._inner = inner

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self._inner.on_start(span, parent_context=parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        if span.status.description is not None or any(e.name == "exception" for e in span.events):
            span = scrubbed(span)
        self._inner.on_end(span)

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


def scrubbed(span: ReadableSpan) -> ReadableSpan:
    """``span`` with its status description cut to a leading word (an error kind or type name)
    and its exception events reduced to the exception's type."""
    description = span.status.description
    if description is not None:
        word = _WORD.match(description)
        description = word.group(0) if word else "error"
    events = [
        Event(
            "exception", {"exception.type": str((e.attributes or {}).get("exception.type", ""))}, e.timestamp
        )
        if e.name == "exception"
        else e
        for e in span.events
    ]
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=span.attributes,
        events=events,
        links=span.links,
        kind=span.kind,
        status=Status(span.status.status_code, description),
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )
