"""Tracing without I/O: when the OTEL_* variables turn it on, and what leaves the process when a
span carries an error text (only the exception's type)."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from medevents import tracing
from medevents._tracing_sdk import KeepTypesOnly
from medevents.config import TracingSettings, load


@pytest.mark.parametrize(
    ("env", "exporters"),
    [
        ({}, []),  # off by default
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://c/v1/traces"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "console"}, ["console"]),
        ({"OTEL_TRACES_EXPORTER": "otlp,console"}, ["otlp", "console"]),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, []),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, ["otlp"]),
    ],
)
def test_tracing_is_on_only_when_otel_variables_ask(env: dict[str, str], exporters: list[str]) -> None:
    settings = load(TracingSettings, env)
    assert settings.exporters == exporters
    assert settings.wanted == (bool(exporters) and "OTEL_SDK_DISABLED" not in env)


def test_off_configures_nothing() -> None:
    assert tracing.configure(load(TracingSettings, {}), "medevents-test") is False
    assert tracing.enabled is False
    with tracing.span("anything") as span:
        assert span is None
    assert not tracing.current_span_context().is_valid


def test_exported_spans_keep_only_the_error_type() -> None:
    exported = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(KeepTypesOnly(SimpleSpanProcessor(exported)))
    tracer = provider.get_tracer("test")
    patient = "PATIENT-SECRET-42"
    with pytest.raises(ValueError, match="bad value"), tracer.start_as_current_span("leaky"):
        raise ValueError(f"bad value for {patient}")
    with tracer.start_as_current_span("mongo") as span:
        span.set_status(Status(StatusCode.ERROR, f"E11000 duplicate key {{ _id: {patient!r} }}"))
    with tracer.start_as_current_span("fine") as span:
        span.set_attribute("medevents.event_id", "e-1")
    leaky, mongo, fine = exported.get_finished_spans()
    assert leaky.status.description == "ValueError"
    assert [dict(e.attributes or {}) for e in leaky.events] == [{"exception.type": "ValueError"}]
    assert mongo.status.description == "E11000"
    assert patient not in repr([s.to_json() for s in (leaky, mongo, fine)])
    assert dict(fine.attributes or {}) == {"medevents.event_id": "e-1"}
    provider.shutdown()
