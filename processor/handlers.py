"""Pluggable processing: the handler contract, its errors, the default handler and the loader.

A handler is an ``async`` function ``handler(event, context) -> HandlerResult | {status, message}``
named by ``PROCESSOR_HANDLER=module:function``. It may raise :class:`TransientError` (retried with
back-off, in order, forever), :class:`PermanentError` (the event is stored as ``failed`` and
dead-lettered at once) or anything else (retried; the same error ``PROCESSOR_MAX_ATTEMPTS`` times
in a row dead-letters the event). A returned status other than ``success`` is stored as it is and
a ``failed`` one is dead-lettered too.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
from opentelemetry.trace import INVALID_SPAN_CONTEXT, SpanContext

from medevents.config import SettingsError
from medevents.model import Event

from .fence import FencingToken

__all__ = [
    "Handler",
    "HandlerContext",
    "HandlerResult",
    "PermanentError",
    "TransientError",
    "load_handler",
    "simulate",
]


class PermanentError(Exception):
    """The event can never be processed: store it as failed and dead-letter it now."""


class TransientError(Exception):
    """Try again later (a dependency is down): retried with back-off, in order, without limit."""


class HandlerResult(msgspec.Struct, frozen=True):
    """What the handler reports; stored as the document's ``result``."""

    status: str = "success"  # success | failed (failed ones are dead-lettered as well)
    message: str = "Event processed successfully"


@dataclass(frozen=True)
class HandlerContext:
    """Everything a handler may need besides the event."""

    event_id: str  # the event's id (unique in processed_events)
    sequence: int  # stream sequence of the event (its place in the patient's order)
    partition: int  # the stream partition it came from
    attempt: int  # 1 on the first run; counts earlier deliveries and retries
    fencing_token: FencingToken  # (watermark, sequence): make external side effects conditional
    delay_min_ms: int  # simulated processing time, lower bound (live tuning)
    delay_max_ms: int  # simulated processing time, upper bound (live tuning)
    # The handler run's span (trace id, span id, flags) while tracing is on, else invalid. The run
    # is also the current span: ``opentelemetry.propagate.inject(headers)`` in a handler carries
    # the trace on to the systems it calls.
    span_context: SpanContext = INVALID_SPAN_CONTEXT


Handler = Callable[[Event, HandlerContext], Awaitable[HandlerResult | Mapping[str, Any]]]

SUCCESS = HandlerResult()


async def simulate(event: Event, context: HandlerContext) -> HandlerResult:
    """The old demo's processing: a random delay (5-6 s by default), then success."""
    delay_ms = random.uniform(context.delay_min_ms, context.delay_max_ms)
    if delay_ms > 0:
        await asyncio.sleep(delay_ms / 1000)
    return SUCCESS


def as_result(value: HandlerResult | Mapping[str, Any]) -> HandlerResult:
    """Accept a :class:`HandlerResult` or a ``{status, message}`` mapping from a handler."""
    if isinstance(value, HandlerResult):
        return value
    try:
        return msgspec.convert(value, HandlerResult)
    except msgspec.ValidationError as exc:
        raise PermanentError(f"the handler returned an invalid result: {exc}") from None


def load_handler(spec: str) -> Handler:
    """``module:function`` -> the async handler; a bad spec names PROCESSOR_HANDLER."""
    module_name, _, function_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SettingsError(f"PROCESSOR_HANDLER: cannot import {module_name!r} ({exc})") from None
    function = getattr(module, function_name, None)
    if function is None:
        raise SettingsError(f"PROCESSOR_HANDLER: {module_name!r} has no {function_name!r}")
    if not inspect.iscoroutinefunction(function):
        raise SettingsError(f"PROCESSOR_HANDLER: {spec!r} is not an async function")
    handler: Handler = function
    return handler
