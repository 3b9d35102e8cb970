"""Tracing end to end: `medevents up` with an OTLP endpoint set, one POST with a W3C
``traceparent``, and one trace across ingest and processor in what the receiver got — the client's
trace id, ingest's spans under the client's span, the processor's under ingest's publish span,
the handler seeing its own span, the batched write linking back to the event's store span. Without
a ``traceparent`` a trace starts at ingest; a batch gives each event its own publish span; a
failing event shows its dead-lettering."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import msgspec
import pytest

from .localup import LocalUp
from .otlp import ExportedSpan, OtlpSink

JSON = {"Content-Type": "application/json"}
SERVER, PRODUCER, CONSUMER = 2, 4, 5
ERROR = 2

# Imported by the processors: reports the span it ran in through the stored result message.
HANDLER = """
from medevents.processor import HandlerResult, PermanentError


async def handle(event, context):
    if event.type == "poison":
        raise PermanentError("poison")
    return HandlerResult("success", f"trace {context.span_context.trace_id:032x} "
                                    f"span {context.span_context.span_id:016x}")
"""


def body(patient: str, kind: str = "vitals", n: int = 0) -> dict[str, object]:
    return {"patientId": patient, "type": kind, "data": {"n": n}, "ts": "2025-10-01T10:30:00Z"}


def wait_stored(client: httpx.Client, event_id: str, timeout: float = 60) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.get(f"/events/{event_id}")
        if response.status_code == 200:
            doc: dict[str, object] = response.json()
            return doc
        time.sleep(0.2)
    raise AssertionError(f"event {event_id} was not stored within {timeout:g} s")


def one(spans: list[ExportedSpan], **match: object) -> ExportedSpan:
    """The one span that matches. A processing handed back (``released``: the local autoscaler
    stopped the processor that held it) is left out: the redelivery is the one that counts."""
    found = [
        s
        for s in spans
        if all(getattr(s, k) == v for k, v in match.items())
        and s.attributes.get("medevents.outcome") != "released"
    ]
    assert len(found) == 1, (match, [(s.service, s.name, s.trace_id) for s in found])
    return found[0]


def in_trace(spans: list[ExportedSpan], trace_id: str) -> list[ExportedSpan]:
    return [s for s in spans if s.trace_id == trace_id]


def settled(span: ExportedSpan) -> bool:
    """A ``process EVENTS`` span that ended with the event done (not handed back)."""
    return span.name == "process EVENTS" and span.attributes.get("medevents.outcome") != "released"


def complete(trace_id: str, *names: str) -> Callable[[list[ExportedSpan]], bool]:
    def check(spans: list[ExportedSpan]) -> bool:
        trace = in_trace(spans, trace_id)
        got = {s.name for s in trace}
        return all(n in got for n in names) and any(settled(s) for s in trace)

    return check


@pytest.fixture
def traced_up(tmp_path: Path) -> Iterator[tuple[LocalUp, OtlpSink]]:
    (tmp_path / "trace_handler.py").write_text(HANDLER)
    with OtlpSink() as sink:
        up = LocalUp(
            tmp_path / "data",
            env={
                **sink.env(),
                "PROCESSOR_HANDLER": "trace_handler:handle",
                "PYTHONPATH": str(tmp_path),
                "MEDEVENTS_AUTOSCALE_MAX_PROCESSORS": "1",
            },
        )
        try:
            up.start()
            yield up, sink
        finally:
            up.stop()


def test_one_post_is_one_trace_across_ingest_and_processor(traced_up: tuple[LocalUp, OtlpSink]) -> None:
    up, sink = traced_up
    trace_id, client_span = os.urandom(16).hex(), os.urandom(8).hex()
    with httpx.Client(base_url=up.url, timeout=30) as client:
        response = client.post(
            "/events",
            content=msgspec.json.encode(body("trace-patient-1")),
            headers={**JSON, "traceparent": f"00-{trace_id}-{client_span}-01", "tracestate": "vendor=x"},
        )
        assert response.status_code == 202, response.text
        event_id = response.json()["eventId"]
        doc = wait_stored(client, event_id)

        names = ("POST /events", "validate event", "publish EVENTS", "process EVENTS", "wait for turn")
        spans = sink.wait_for(complete(trace_id, *names, "handle", "store"), what="the trace")
        trace = in_trace(spans, trace_id)

        # Ingest: the server span continues the client's span; validation and publish under it.
        server = one(trace, name="POST /events")
        assert (server.service, server.kind, server.parent_id) == ("medevents-ingest", SERVER, client_span)
        assert server.attributes.get("http.route") == "/events"
        validate = one(trace, name="validate event")
        publish = one(trace, name="publish EVENTS")
        assert validate.parent_id == publish.parent_id == server.span_id
        assert publish.kind == PRODUCER
        assert publish.attributes["medevents.event_id"] == event_id
        assert publish.attributes["medevents.duplicate"] is False

        # Processor: continues ingest's publish span through the JetStream message headers.
        process = one(trace, name="process EVENTS")
        assert (process.service, process.kind, process.parent_id) == (
            "medevents-processor",
            CONSUMER,
            publish.span_id,
        )
        assert process.attributes["medevents.event_id"] == event_id
        assert process.attributes["medevents.outcome"] == "applied"
        assert process.attributes["medevents.patient"] == publish.attributes["medevents.patient"]
        under = [s for s in trace if s.parent_id == process.span_id]
        wait, handle, store = (one(under, name=n) for n in ("wait for turn", "handle", "store"))
        assert handle.attributes["medevents.attempt"] == 1
        assert wait.attributes["medevents.fence_waits"] == 0  # a new patient: nothing earlier to wait for
        # The handler ran in its span and saw it (it wrote the ids into the stored result).
        result = doc["result"]
        assert isinstance(result, dict)
        assert result["message"] == f"trace {trace_id} span {handle.span_id}"

        # The batched MongoDB write is its own span, linked to this event's store span, with the
        # driver's command spans under it.
        batches = sink.wait_for(
            lambda s: any((trace_id, store.span_id) in x.links for x in s if x.name == "write events"),
            what="the write batch",
        )
        write = next(s for s in batches if s.name == "write events" and (trace_id, store.span_id) in s.links)
        assert write.attributes["medevents.batch_size"] >= 1
        commands = [s for s in batches if s.parent_id == write.span_id]
        assert {c.attributes.get("db.system") for c in commands} == {"mongodb"}, commands

        # No traceparent: ingest starts the trace, the processor continues it.
        response = client.post("/events", content=msgspec.json.encode(body("trace-patient-2")), headers=JSON)
        assert response.status_code == 202
        second = response.json()["eventId"]
        wait_stored(client, second)
        spans = sink.wait_for(
            lambda s: any(
                x.name == "process EVENTS" and x.attributes.get("medevents.event_id") == second for x in s
            ),
            what="the second event's processing",
        )
        publish = next(
            s for s in spans if s.name == "publish EVENTS" and s.attributes["medevents.event_id"] == second
        )
        about = [(x.service, x.name, x.trace_id, x.parent_id, x.attributes.get("medevents.outcome"))
                 for x in spans if x.attributes.get("medevents.event_id") == second]  # fmt: skip
        assert any(settled(x) and x.trace_id == publish.trace_id for x in spans), about
        started = one(spans, name="process EVENTS", trace_id=publish.trace_id)
        root = one(in_trace(spans, started.trace_id), name="POST /events")
        assert root.parent_id == "" and started.trace_id != trace_id

        # A batch: one trace (the request's), one publish span per event, each continued.
        batch_trace = os.urandom(16).hex()
        response = client.post(
            "/events/batch",
            content=msgspec.json.encode([body("trace-patient-3", n=1), body("trace-patient-4", n=2)]),
            headers={**JSON, "traceparent": f"00-{batch_trace}-{os.urandom(8).hex()}-01"},
        )
        assert response.status_code == 202, response.text
        ids = [item["eventId"] for item in response.json()["items"]]
        for event_id in ids:
            wait_stored(client, event_id)
        spans = sink.wait_for(
            lambda s: sum(settled(x) for x in in_trace(s, batch_trace)) == 2,
            what="both batch events' processing",
        )
        trace = in_trace(spans, batch_trace)
        publishes = {s.attributes["medevents.event_id"]: s for s in trace if s.name == "publish EVENTS"}
        assert sorted(publishes) == sorted(ids)
        for s in trace:
            if s.name == "process EVENTS":  # handed back or settled, each continues its publish
                assert s.parent_id == publishes[s.attributes["medevents.event_id"]].span_id

        # A poison event: dead-lettered, in its trace, the processing marked failed.
        poison_trace = os.urandom(16).hex()
        response = client.post(
            "/events",
            content=msgspec.json.encode(body("trace-patient-5", kind="poison")),
            headers={**JSON, "traceparent": f"00-{poison_trace}-{os.urandom(8).hex()}-01"},
        )
        assert response.status_code == 202
        wait_stored(client, response.json()["eventId"])
        spans = sink.wait_for(complete(poison_trace, "dead-letter", "process EVENTS"), what="the dead letter")
        trace = in_trace(spans, poison_trace)
        process = one(trace, name="process EVENTS")
        assert (process.attributes["medevents.outcome"], process.status_code) == ("failed", ERROR)
        under = [s for s in trace if s.parent_id == process.span_id]
        one(under, name="dead-letter")
        handle = one(under, name="handle")
        assert (handle.status_code, handle.status_message) == (ERROR, "PermanentError")
