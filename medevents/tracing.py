"""OpenTelemetry tracing: off unless the standard ``OTEL_*`` variables turn it on.

:func:`configure` sets up the SDK (the ``otel`` extra) for one component when
``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_TRACES_EXPORTER``
asks for it; everything else (headers, sampler, batch sizes, resource attributes) is read by the SDK
from its own ``OTEL_*`` variables. While tracing is off, :data:`enabled` is False and every helper
here returns at once: hot paths check it first and pay one attribute read.

Spans carry event ids, sequences, partitions and the keyed patient hash, never patient ids or
event data; exception messages and error descriptions can quote input, so exported spans keep only
the exception's type (as the JSON logs do; see ``_tracing_sdk``).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import INVALID_SPAN_CONTEXT, Link, Span, SpanContext, SpanKind, Status, StatusCode

from medevents import logs, topology
from medevents.config import SettingsError, TracingSettings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from starlette.applications import Starlette

__all__ = [
    "EVENT_ID",
    "INVALID_SPAN_CONTEXT",
    "PATIENT",
    "Link",
    "Span",
    "SpanContext",
    "SpanKind",
    "attached",
    "configure",
    "current_span",
    "current_span_context",
    "enabled",
    "error",
    "event_attributes",
    "extract",
    "inject",
    "instrument_pymongo",
    "instrument_starlette",
    "shutdown",
    "span",
    "tracer",
]

enabled = False  # True once configure() set up the SDK in this process
tracer: trace.Tracer = trace.NoOpTracer()
_provider: TracerProvider | None = None
_NO_SPAN: contextlib.nullcontext[None] = contextlib.nullcontext()
_CONVERTER = re.compile(r":\w+}")  # /events/{event_id:str} -> /events/{event_id}
_PROBES = "/health$,/livez$,/readyz$,/metrics$"  # never traced: probes and scrapes are not work


def configure(settings: TracingSettings, service: str) -> bool:
    """Set up tracing for ``service`` (``medevents-ingest``, ...) when ``settings`` ask for it;
    False (nothing done) when they do not. Raises :class:`SettingsError` naming the variable when
    tracing is asked for but cannot work (the ``otel`` extra missing, an unsupported protocol)."""
    global enabled, tracer, _provider
    if not settings.wanted:
        return False
    try:
        from medevents import _tracing_sdk
    except ImportError:
        raise SettingsError(
            f"{settings.trigger}: tracing needs the OpenTelemetry SDK: pip install 'medevents[otel]'"
        ) from None
    provider = _tracing_sdk.provider(settings, service)
    trace.set_tracer_provider(provider)
    _provider = provider
    tracer = provider.get_tracer("medevents")
    enabled = True
    return True


def shutdown() -> None:
    """Export what is buffered and stop (at process exit; the SDK also does it at exit)."""
    global enabled
    if _provider is not None:
        _provider.shutdown()
    enabled = False


# -- spans --------------------------------------------------------------------------------------


def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    parent: otel_context.Context | None = None,
    attributes: Mapping[str, str | int | bool] | None = None,
    links: Sequence[Link] | None = None,
) -> contextlib.AbstractContextManager[Span | None]:
    """A current span around a block, or a shared no-op (yielding None) while tracing is off.
    Exceptions are not recorded with their message; callers set the status with :func:`error`."""
    if not enabled:
        return _NO_SPAN
    return tracer.start_as_current_span(
        name,
        context=parent,
        kind=kind,
        attributes=attributes,
        links=links,
        record_exception=False,
        set_status_on_exception=False,
    )


EVENT_ID = "medevents.event_id"
PATIENT = "medevents.patient"  # the keyed patient hash of the logs, never the patient id


def event_attributes(event_id: str, patient_id: str) -> dict[str, str]:
    """What a span may say about an event: its id and the keyed patient hash (as logs do)."""
    return {
        EVENT_ID: event_id,
        PATIENT: logs.patient_ref(patient_id),
        "messaging.system": "nats",
        "messaging.destination.name": topology.STREAM,
        "messaging.message.id": event_id,
    }


def error(span: Span | None, what: str) -> None:
    """Mark ``span`` failed with a short, data-free description (an error kind or type name)."""
    if span is not None:
        span.set_status(Status(StatusCode.ERROR, what))


def current_span() -> Span | None:
    """The current span while tracing is on (None while it is off)."""
    return trace.get_current_span() if enabled else None


def current_span_context() -> SpanContext:
    """The current span's context (invalid while tracing is off or outside any span)."""
    return trace.get_current_span().get_span_context()


def inject(headers: MutableMapping[str, str]) -> None:
    """Add ``traceparent`` (and ``tracestate``) of the current span to message headers."""
    propagate.inject(headers)


def extract(headers: Mapping[str, str] | None) -> otel_context.Context:
    """The trace context carried by message headers (an empty context when there is none)."""
    return propagate.extract(headers or {})


@contextlib.contextmanager
def attached(ctx: otel_context.Context) -> Iterator[None]:
    """Make ``ctx`` the current context for a block."""
    token = otel_context.attach(ctx)
    try:
        yield
    finally:
        otel_context.detach(token)


# -- instrumentation ----------------------------------------------------------------------------


def instrument_starlette(app: Starlette) -> None:
    """Server spans for ``app`` (ASGI instrumentation): W3C ``traceparent``/``tracestate`` are
    read from every request, a trace starts when absent. Span names use the route template
    (``POST /events``, ``GET /events/{event_id}``), and the raw path and URL attributes are
    replaced by it (an event id in a path is the client's, it may carry anything)."""
    if not enabled:
        return
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    app.add_middleware(
        OpenTelemetryMiddleware,
        excluded_urls=_PROBES,
        default_span_details=_route_details,
        server_request_hook=_scrub_request,
        exclude_spans=["receive", "send"],
        tracer=tracer,
    )


def _route_template(scope: MutableMapping[str, Any]) -> str:
    """The matching route's path template (``/events/{event_id}``), "" when none matches; worked
    out once per request (the span name and the scrubbing hook both ask)."""
    cached = scope.get("medevents.route")
    if cached is not None:
        return str(cached)
    from starlette.routing import Match

    route_path = ""
    for route in getattr(scope.get("app"), "routes", ()):
        match, _ = route.matches(scope)
        if match is Match.FULL:
            route_path = _CONVERTER.sub("}", str(getattr(route, "path", "")))
            break
    scope["medevents.route"] = route_path
    return route_path


def _route_details(scope: MutableMapping[str, Any]) -> tuple[str, dict[str, str]]:
    route = _route_template(scope)
    method = str(scope.get("method", ""))
    if not route:
        return method or "HTTP", {}
    return f"{method} {route}", {"http.route": route}


_PATH_ATTRIBUTES = ("http.target", "url.path")
_URL_ATTRIBUTES = ("http.url", "url.full")


def _scrub_request(span: Span, scope: MutableMapping[str, Any]) -> None:
    if not span.is_recording():
        return
    route = _route_template(scope) or "unmatched"
    present = getattr(span, "attributes", None) or {}
    for key in _PATH_ATTRIBUTES:
        if key in present:
            span.set_attribute(key, route)
    for key in _URL_ATTRIBUTES:
        if key in present:
            span.set_attribute(key, route)
    if "url.query" in present:
        span.set_attribute("url.query", "")


def instrument_pymongo() -> None:
    """Client spans for MongoDB commands (PyMongo's command monitoring; clients created after
    this call). Command documents are never recorded; a failed command keeps its code only."""
    if not enabled:
        return
    from opentelemetry.instrumentation.pymongo import PymongoInstrumentor

    PymongoInstrumentor().instrument(tracer_provider=_provider, failed_hook=_mongo_failed)


def _mongo_failed(span: Span, event: Any) -> None:
    span.set_status(Status(StatusCode.ERROR, str(event.failure.get("codeName") or "MongoError")))
