"""One held event through the fence: decide, run the handler, store, move the watermark, ack.

This is the shell around the pure :func:`~medevents.processor.fence.decide`: it gathers the
watermark and the stream lookup, acts on the decision, and keeps every gap crash-safe:

- nothing is acknowledged before the document and the watermark are in MongoDB;
- the document is inserted before the watermark moves (a crash between them is repaired by the
  redelivery, which finds the document and only moves the watermark);
- a write that loses the compare-and-set re-reads the watermark and fences again;
- an event whose heartbeats lapsed for longer than the abandon limit is dropped unwritten: JetStream
  may have handed it to another pod already;
- dead letters are published before the failed document is stored, with an id derived from the
  original sequence, so a retry after a crash stores one dead letter.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import msgspec
import nats.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from pymongo.errors import PyMongoError

from medevents import logs, tracing
from medevents.model import Event, decode_event
from medevents.subjects import patient_id

from . import _tracing
from ._metrics import ProcessorMetrics
from .consumers import FenceLookupError, first_pending
from .deadletter import dead_letter_headers, event_id_of
from .documents import processed_document
from .fence import Decision, FencingToken, decide
from .handlers import Handler, HandlerContext, HandlerResult, PermanentError, TransientError, as_result
from .lanes import HeldEvent, LaneStep
from .writer import ApplyOutcome, EventStore, WriteRequest

__all__ = ["Applier", "LiveSettings"]

log = logging.getLogger("medevents.processor")

_KNOWN_MAX = 200_000  # remembered watermarks (hints only; forgotten all at once when full)
_TRANSIENT = (PyMongoError, nats.errors.Error, FenceLookupError, TimeoutError)


@dataclass
class LiveSettings:
    """Settings that live tuning may change while the pod runs."""

    delay_min_ms: int
    delay_max_ms: int
    max_attempts: int
    abandon_after_s: float  # heartbeat gap after which held work is abandoned
    retry_initial_s: float
    retry_max_s: float


class _Abandoned(Exception):
    """The event's heartbeats lapsed: stop, write nothing."""


@dataclass
class _Outcome:
    document: dict[str, object]
    failed_error: str | None  # set when the event is to be dead-lettered
    event_id: str
    patient: str


class Applier:
    """Runs the fence and the handler for held events (the lanes' step function)."""

    def __init__(
        self,
        *,
        nc: NATS,
        js: JetStreamContext,
        store: EventStore,
        handler: Handler,
        live: LiveSettings,
        metrics: ProcessorMetrics,
        member_id: str,
        request_timeout_s: float,
        on_transient: Callable[[str, bool], None],
    ) -> None:
        self._nc = nc
        self._js = js
        self._store = store
        self._handler = handler
        self.live = live
        self._metrics = metrics
        self._member = member_id
        self._timeout = request_timeout_s
        self._on_transient = on_transient  # (kind, failing) for readiness
        # The highest watermark this pod saw per patient token: a lower bound, used as a hint.
        self._known: dict[str, int] = {}

    # -- helpers -----------------------------------------------------------------------------

    def _check_alive(self, held: HeldEvent) -> None:
        if held.expired or time.monotonic() - held.last_beat > self.live.abandon_after_s:
            held.expired = True
            raise _Abandoned

    async def _backoff(self, held: HeldEvent, attempt: int) -> None:
        delay = min(self.live.retry_max_s, self.live.retry_initial_s * 2 ** min(attempt, 30))
        await asyncio.sleep(delay * random.uniform(0.5, 1.0))
        self._check_alive(held)

    def _transient(self, kind: str, exc: BaseException) -> None:
        self._metrics.transient_errors.labels(kind).inc()
        self._on_transient(kind, True)
        log.warning("transient error; retrying", extra={"kind": kind, "error": type(exc).__name__})

    async def _fence(self, held: HeldEvent) -> tuple[Decision, int]:
        """Read the watermark, then the stream; retry transient errors until it answers.

        For a first delivery, the watermark this pod last saw for the patient is used without a
        read. Watermarks only grow, so it is at worst too low, and a too-low watermark can only
        make the lookup find an earlier message (then the watermark is read for real) or make the
        compare-and-set lose (then the write fences again): it never lets an event through early.
        A redelivery always reads: it may be an event applied whose acknowledgement got lost.
        """
        failures = 0
        hint = self._known.get(held.token) if held.delivered == 1 else None
        while True:
            self._check_alive(held)
            try:
                if hint is not None:
                    watermark = hint
                else:
                    watermark = await self._store.watermark(held.token)
                    self._remember(held.token, watermark)
                if held.sequence <= watermark:
                    return Decision.DONE, watermark
                first = await first_pending(self._nc, held.subject, watermark, self._timeout)
            except _TRANSIENT as exc:
                self._transient("fence", exc)
                await self._backoff(held, failures)
                failures += 1
                continue
            self._on_transient("fence", False)
            decision = decide(held.sequence, watermark, first, confirmed_gone=held.gone_seen)
            if hint is not None and decision is not Decision.APPLY:
                hint = None  # not conclusive on a remembered watermark: read it
                continue
            if decision is Decision.GONE:
                held.gone_seen = True
                self._metrics.fenced.labels("gone").inc()
                continue  # look again with a fresh watermark
            held.gone_seen = False
            return decision, watermark

    def _remember(self, token: str, watermark: int) -> None:
        if len(self._known) >= _KNOWN_MAX:
            self._known.clear()
        if watermark > self._known.get(token, 0):
            self._known[token] = watermark

    async def _ack(self, held: HeldEvent) -> None:
        held.released = True
        try:
            await held.msg.ack()
        except nats.errors.Error as exc:  # durable already; the redelivery will be found done
            log.info("ack not sent", extra={"seq": held.sequence, "error": type(exc).__name__})

    # -- the step ---------------------------------------------------------------------------

    async def step(self, held: HeldEvent) -> LaneStep:
        """Take the lane's head event as far as it can go now."""
        try:
            with _tracing.waiting(held):
                decision, watermark = await self._fence(held)
            if decision is Decision.WAIT:
                self._metrics.fenced.labels("wait").inc()
                held.fence_waits += 1
                return LaneStep.WAIT
            _tracing.end_wait(held, held.fence_waits)
            if decision is Decision.DONE:
                self._metrics.duplicates.inc()
                await self._ack(held)
                _tracing.note(held, "done")
                return self._done(held)
            self._metrics.running.inc()
            try:
                outcome = await self._run(held, watermark)
            finally:
                self._metrics.running.dec()
            return await self._finish(held, outcome, watermark)
        except _Abandoned:
            held.released = True
            self._metrics.abandoned.inc()
            log.warning("heartbeats lapsed; abandoning event unwritten", extra={"seq": held.sequence})
            _tracing.note(held, "abandoned", failed=True)
            return self._done(held)

    @staticmethod
    def _done(held: HeldEvent) -> LaneStep:
        _tracing.finish(held)
        return LaneStep.DONE

    async def _run(self, held: HeldEvent, watermark: int) -> _Outcome:
        """Run the handler, retrying as the error says, until it succeeds or fails for good."""
        event_id = event_id_of(held.msg.headers, held.sequence)
        try:
            # Ingest refused repeated keys when it accepted the event; an event stored before it
            # did is processed as it was accepted (the last of a repeated key wins).
            event: Event | None = decode_event(held.msg.data, unique_keys=False)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
            event = None
            error = f"undecodable payload: {type(exc).__name__}"
        patient = event.patientId if event else patient_id(held.token)
        token = FencingToken(watermark, held.sequence)
        runs = 0
        same_error, last_error, transient_failures = 0, "", 0
        while event is not None:
            self._check_alive(held)
            runs += 1
            attempt = held.delivered - 1 + runs
            started = dt.datetime.now(dt.UTC)
            t0 = time.perf_counter()
            try:
                result = await self._handle(held, event, event_id, attempt, token)
            except PermanentError as exc:
                error = f"PermanentError: {exc}"
                break
            except TransientError as exc:
                self._metrics.retries.labels("transient").inc()
                log.info(
                    "handler transient error; retrying",
                    extra={"eventId": event_id, "error": type(exc).__name__},
                )
                await self._backoff(held, transient_failures)
                transient_failures += 1
                continue
            except Exception as exc:  # foreign handler code: any other error is retried, then dead-lettered
                signature = f"{type(exc).__name__}: {exc}"
                same_error = same_error + 1 if signature == last_error else 1
                last_error = signature
                log.info(
                    "handler error",
                    extra={"eventId": event_id, "error": type(exc).__name__, "same_error_count": same_error},
                )
                if same_error >= self.live.max_attempts:
                    error = f"{signature} (after {same_error} attempts)"
                    break
                self._metrics.retries.labels("error").inc()
                await self._backoff(held, same_error - 1)
                continue
            finished = dt.datetime.now(dt.UTC)
            self._metrics.processing_seconds.observe(time.perf_counter() - t0)
            document = processed_document(
                event,
                event_id=event_id,
                patient_id=patient,
                sequence=held.sequence,
                partition=held.partition,
                attempts=attempt,
                started=started,
                finished=finished,
                result=result,
                member=self._member,
            )
            failed = result.message if result.status == "failed" else None
            return _Outcome(document, failed, event_id, patient)
        now = dt.datetime.now(dt.UTC)
        document = processed_document(
            event,
            event_id=event_id,
            patient_id=patient,
            sequence=held.sequence,
            partition=held.partition,
            attempts=held.delivered - 1 + max(runs, 1),
            started=now,
            finished=now,
            result=HandlerResult("failed", error),
            member=self._member,
        )
        return _Outcome(document, error, event_id, patient)

    async def _handle(
        self, held: HeldEvent, event: Event, event_id: str, attempt: int, token: FencingToken
    ) -> HandlerResult:
        """One handler run (span ``handle`` with the attempt number; the handler sees its context)."""
        with tracing.span("handle", parent=_tracing.parent(held)) as span:
            if span is not None:
                span.set_attribute("medevents.attempt", attempt)
            context = HandlerContext(
                event_id=event_id,
                sequence=held.sequence,
                partition=held.partition,
                attempt=attempt,
                fencing_token=token,
                delay_min_ms=self.live.delay_min_ms,
                delay_max_ms=self.live.delay_max_ms,
                span_context=tracing.current_span_context(),
            )
            try:
                return as_result(await self._handler(event, context))
            except Exception as exc:
                tracing.error(span, type(exc).__name__)
                raise

    async def _dead_letter(self, held: HeldEvent, outcome: _Outcome) -> None:
        with tracing.span("dead-letter", parent=_tracing.parent(held)):
            await self._publish_dead_letter(held, outcome)

    async def _publish_dead_letter(self, held: HeldEvent, outcome: _Outcome) -> None:
        assert outcome.failed_error is not None
        headers = dead_letter_headers(
            outcome.event_id,
            error=outcome.failed_error,
            sequence=held.sequence,
            partition=held.partition,
            attempts=int(str(outcome.document["attempts"])),
        )
        if tracing.enabled:
            tracing.inject(headers)
        failures = 0
        while True:
            self._check_alive(held)
            try:
                await self._js.publish(f"deadletter.{held.token}", held.msg.data, headers=headers)
                return
            except _TRANSIENT as exc:
                self._transient("dead_letter", exc)
                await self._backoff(held, failures)
                failures += 1

    async def _finish(self, held: HeldEvent, outcome: _Outcome, watermark: int) -> LaneStep:
        """Dead-letter if failed, store, move the watermark, ack."""
        if outcome.failed_error is not None:
            await self._dead_letter(held, outcome)
        with tracing.span("store", parent=_tracing.parent(held)):
            step = await self._store_and_ack(held, outcome, watermark)
        if step is LaneStep.DONE:
            return self._done(held)
        return step

    async def _store_and_ack(self, held: HeldEvent, outcome: _Outcome, watermark: int) -> LaneStep:
        expected, failures = watermark, 0
        while True:
            self._check_alive(held)
            request = WriteRequest(outcome.document, held.token, expected, held.sequence)
            try:
                result = await self._store.apply(request)
            except _TRANSIENT as exc:
                self._transient("store", exc)
                await self._backoff(held, failures)
                failures += 1
                continue
            self._on_transient("store", False)
            match result.outcome:
                case ApplyOutcome.APPLIED | ApplyOutcome.ALREADY:
                    self._remember(held.token, result.watermark)
                    break
                case ApplyOutcome.REJECTED if outcome.document.get("data") is None:
                    # Even the reduced document is refused: the store is misconfigured. Keep
                    # retrying (visible in metrics and readiness) rather than lose the event.
                    self._transient("store_rejected", RuntimeError(result.detail))
                    await self._backoff(held, failures)
                    failures += 1
                case ApplyOutcome.REJECTED:
                    # The store refuses this document (not a duplicate): keep what can be kept.
                    log.error("store rejected the document", extra={"eventId": outcome.event_id})
                    outcome = _Outcome(
                        {
                            **outcome.document,
                            "data": None,
                            "result": {"status": "failed", "message": result.detail},
                        },
                        result.detail,
                        outcome.event_id,
                        outcome.patient,
                    )
                    await self._dead_letter(held, outcome)
                    continue
                case ApplyOutcome.LOST:
                    self._metrics.fenced.labels("lost").inc()
                    self._remember(held.token, result.watermark)
                    decision, expected = await self._fence(held)
                    if decision is Decision.DONE:
                        break
                    if decision is not Decision.APPLY:
                        log.error(
                            "fence changed its mind after the handler ran", extra={"seq": held.sequence}
                        )
                        return LaneStep.WAIT
        if outcome.failed_error is not None:
            self._metrics.failed.inc()
            _tracing.note(held, "failed", failed=True)
            log.warning(
                "event failed; dead-lettered",
                extra={
                    "eventId": outcome.event_id,
                    "patient": logs.patient_ref(outcome.patient),
                    "seq": held.sequence,
                },
            )
        elif result.duplicate:
            self._metrics.duplicates.inc()
            _tracing.note(held, "duplicate")
        else:
            _tracing.note(held, "applied")
            self._metrics.applied.inc()
            self._metrics.applied_count += 1
            self._metrics.end_to_end_seconds.observe(max(0.0, time.time() - held.accepted_at))
        await self._ack(held)
        return LaneStep.DONE
