"""The processor's spans for one held event, all no-ops while tracing is off.

A delivered message continues the trace its headers carry (the ingest's ``publish EVENTS``
span): ``process EVENTS`` (consumer) lasts until the event leaves the pod; under it ``wait for
turn`` covers the time in the patient lane and at the ordering fence, then one ``handle`` span per
handler run (with the attempt number), ``store`` (the batched write, which links back to it) and
``dead-letter`` when it fails for good.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.context import Context

from medevents import tracing
from medevents.subjects import patient_id

if TYPE_CHECKING:
    from .lanes import HeldEvent

__all__ = ["end_wait", "finish", "note", "parent", "start", "waiting"]

OUTCOME = "medevents.outcome"
_NO_SPAN: contextlib.nullcontext[None] = contextlib.nullcontext()


def start(held: HeldEvent, event_id: str) -> None:
    """Open the event's spans as it is admitted into its lane."""
    attributes: dict[str, str | int] = {
        **tracing.event_attributes(event_id, patient_id(held.token)),
        "medevents.sequence": held.sequence,
        "medevents.partition": held.partition,
        "medevents.delivery": held.delivered,
    }
    held.span = tracing.tracer.start_span(
        "process EVENTS",
        context=tracing.extract(held.msg.headers),
        kind=tracing.SpanKind.CONSUMER,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    )
    held.wait_span = tracing.tracer.start_span(
        "wait for turn", context=trace.set_span_in_context(held.span), record_exception=False
    )


def waiting(held: HeldEvent) -> contextlib.AbstractContextManager[None]:
    """While the fence looks: its watermark reads link to the wait span."""
    if held.wait_span is None:
        return _NO_SPAN
    return tracing.attached(trace.set_span_in_context(held.wait_span))


def end_wait(held: HeldEvent, waits: int) -> None:
    """The fence let the event through (or found it done) after ``waits`` looks that said wait."""
    if held.wait_span is not None:
        held.wait_span.set_attribute("medevents.fence_waits", waits)
        held.wait_span.end()
        held.wait_span = None


def parent(held: HeldEvent) -> Context | None:
    """The context to open the event's child spans in (None while tracing is off)."""
    return None if held.span is None else trace.set_span_in_context(held.span)


def note(held: HeldEvent, outcome: str, failed: bool = False) -> None:
    """Record how the event left the pod: applied, duplicate, done, failed, abandoned, released."""
    if held.span is not None:
        held.span.set_attribute(OUTCOME, outcome)
        if failed:
            tracing.error(held.span, outcome)


def finish(held: HeldEvent) -> None:
    """Close whatever is still open (the event left its lane)."""
    if held.wait_span is not None:
        held.wait_span.end()
        held.wait_span = None
    if held.span is not None:
        held.span.end()
        held.span = None
