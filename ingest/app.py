"""The ingest HTTP API: ``POST /events``, ``POST /events/batch``, ``GET /events/{eventId}``, a
patient's timeline and summary (``GET /patients/{patientId}/events``, ``GET /patients/{patientId}``),
probes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import msgspec
import nats.errors
import pymongo.errors
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from medevents import logs, store, tracing
from medevents.backlog import StreamMissingError
from medevents.config import (
    IngestSettings,
    LogSettings,
    MongoSettings,
    NatsSettings,
    StreamSettings,
    TracingSettings,
    load,
)
from medevents.ids import derive_event_id
from medevents.model import EVENT_ID_PATTERN, Event, EventInvalid, decode_event, decode_events
from medevents.natsmonitor import SyncState, SyncWatch
from medevents.probes import probe_routes
from medevents.problems import ProblemResponse, http_exception_handler, problem
from medevents.subjects import ingest_subject, patient_token

from ._auth import BearerAuth
from ._body import BodyError, BodyReader, media_type
from ._metrics import IngestMetrics
from ._ratelimit import RateLimiter
from .openapi import openapi_document
from .patients import (
    ANY_PATH,
    BadParameter,
    parse_patient_path,
    parse_timeline_query,
    read_summary,
    read_timeline,
)
from .publisher import Publisher, Unavailable
from .wire import Accepted, BatchItem, BatchResult, shown

__all__ = ["IngestService", "create_app"]

log = logging.getLogger("medevents.ingest")

_JSON_TYPES = {"application/json"}
_BATCH_TYPES = {"application/json", "application/x-ndjson", "application/ndjson"}
_AT_PATH = re.compile(r" - at `\$(.*)`$")
_NAMED_FIELD = re.compile(r"(?:missing required|unknown) field `([^`]+)`")
_EVENT_ID = re.compile(EVENT_ID_PATTERN)


def _bson_value(value: object) -> object:
    """What msgspec cannot encode in a stored document: BSON 64-bit integers (``Int64``, an int
    subclass, for any number in ``data`` beyond 32 bits). Called only for such values."""
    if isinstance(value, int):
        return int(value)
    raise NotImplementedError(f"cannot encode {type(value).__name__}")


_encoder = msgspec.json.Encoder(enc_hook=_bson_value)
_JSON_HEADERS = [(b"content-type", b"application/json")]


class Invalid(Exception):
    """A request whose event is invalid; carries the problem to answer."""

    def __init__(self, status: int, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.field = status, detail, field

    def as_dict(self) -> dict[str, Any]:
        slug = "validation-error" if self.status == 422 else "malformed-request"
        out: dict[str, Any] = {
            "status": self.status,
            "type": f"urn:medevents:problem:{slug}",
            "detail": self.detail,
        }
        if self.field is not None:
            out["field"] = self.field
        return out


def _invalid(exc: Exception) -> Invalid:
    """A decoding error as a problem naming the field (``patientId``, ``data.vitals[2]``)."""
    message = str(exc)
    if isinstance(exc, EventInvalid):
        return Invalid(422, exc.detail, exc.field.removeprefix("$").lstrip("."))
    if isinstance(exc, msgspec.ValidationError):
        match = _AT_PATH.search(message)
        detail = message[: match.start()] if match else message
        field = match.group(1).lstrip(".") if match else ""
        named = _NAMED_FIELD.search(detail)
        if named:
            field = f"{field}.{named.group(1)}" if field else named.group(1)
        return Invalid(422, detail, field)
    return Invalid(400, f"the body is not valid JSON: {message}")


class IngestService:
    """Decodes, validates and publishes events; one per process."""

    def __init__(
        self,
        settings: IngestSettings,
        nats_settings: NatsSettings,
        stream_settings: StreamSettings,
        mongo_settings: MongoSettings,
    ) -> None:
        self.settings = settings
        self.metrics = IngestMetrics()
        self.auth = BearerAuth(settings)
        self.limiter = RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)
        self.publisher = Publisher(nats_settings, stream_settings, settings, self.metrics)
        self._mongo_settings = mongo_settings
        self._mongo = store.mongo_client(mongo_settings, "medevents-ingest")
        self._retry_after = {"Retry-After": str(settings.retry_after_s)}
        self.nats_sync = SyncWatch(nats_settings.monitor_url)
        self.bodies = BodyReader(settings.body_timeout_s)
        self._admission = self.auth.enabled or self.limiter.enabled
        self._events_202 = self.metrics.requests.labels("events", "202")

    # -- helpers ---------------------------------------------------------------------------

    def _answer(self, request: Request, route: str, response: Response) -> Response:
        self.metrics.requests.labels(route, str(response.status_code)).inc()
        return response

    def _admit(self, request: Request) -> ProblemResponse | None:
        """None when the request may proceed; else the 401 or 429 problem to answer."""
        client = self.auth.check(request)
        if isinstance(client, ProblemResponse):
            self.metrics.errors.labels("unauthorized").inc()
            return client
        wait = self.limiter.check(client)
        if wait:
            self.metrics.errors.labels("rate_limited").inc()
            detail = f"more than {self.limiter.rate:g} requests per second; retry in {wait} s"
            return problem(429, detail, headers={"Retry-After": str(wait)})
        return None

    def _unavailable(self, exc: Unavailable) -> ProblemResponse:
        self.metrics.errors.labels(exc.kind).inc()
        return problem(
            503, exc.detail, slug=f"unavailable-{exc.kind.replace('_', '-')}", headers=self._retry_after
        )

    def _idempotency_key(self, key: str | None) -> str | None:
        if key is None:
            return None
        if len(key) > 128 or not _EVENT_ID.match(key):
            raise Invalid(422, "Idempotency-Key must be 1-128 visible ASCII characters", "Idempotency-Key")
        return key

    async def _body(self, request: Request, types: set[str], limit: int) -> bytes:
        if media_type(request.headers.get("content-type", "")) not in types:
            raise BodyError(415, f"send the body as {' or '.join(sorted(types))}")
        return await self.bodies.read(request.receive, request.headers.get("content-length"), limit)

    def _validate(self, raw: bytes, key: str | None) -> tuple[Event, str]:
        """Decode and validate one event and derive its id (span ``validate event``)."""
        with tracing.span("validate event") as span:
            try:
                event = decode_event(raw)
            except (msgspec.DecodeError, EventInvalid) as exc:
                tracing.error(span, "invalid")
                raise _invalid(exc) from None
            event_id = derive_event_id(event, key)
            if span is not None:
                span.set_attribute(tracing.EVENT_ID, event_id)
            return event, event_id

    async def _publish(self, event: Event, raw: bytes, event_id: str) -> bool:
        with tracing.span("publish EVENTS", kind=tracing.SpanKind.PRODUCER) as span:
            if span is not None:
                span.set_attributes(tracing.event_attributes(event_id, event.patientId))
            try:
                duplicate = await self.publisher.publish(
                    ingest_subject(patient_token(event.patientId)), raw, event_id
                )
            except Unavailable as exc:
                tracing.error(span, exc.kind)
                raise
            if span is not None:
                span.set_attribute("medevents.duplicate", duplicate)
        if duplicate:
            self.metrics.duplicates.inc()
        else:
            self.metrics.accepted.inc()
        if log.isEnabledFor(logging.DEBUG):  # the patient hash (an HMAC) costs ~3% of a request
            log.debug(
                "event queued",
                extra={
                    "eventId": event_id,
                    "patient": logs.patient_ref(event.patientId),
                    "duplicate": duplicate,
                },
            )
        return duplicate

    # -- routes ----------------------------------------------------------------------------

    async def post_event(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``POST /events`` as a bare ASGI app: the hot path, without a Request object, routing or
        middleware per request (they cost about a sixth of a request; docs/BENCHMARKS.md)."""
        outcome = await self._post_event(scope, receive)
        if isinstance(outcome, bytes):
            self._events_202.inc()
            length = str(len(outcome)).encode("ascii")
            await send(
                {
                    "type": "http.response.start",
                    "status": 202,
                    "headers": [*_JSON_HEADERS, (b"content-length", length)],
                }
            )
            await send({"type": "http.response.body", "body": outcome})
        else:
            self.metrics.requests.labels("events", str(outcome.status_code)).inc()
            await outcome(scope, receive, send)

    async def _post_event(self, scope: Scope, receive: Receive) -> bytes | Response:
        """The 202 answer's body, or the problem to answer."""
        content_type = content_length = key = None
        for name, value in scope["headers"]:  # the first of each, as Starlette's Headers.get
            if name == b"content-type" and content_type is None:
                content_type = value.decode("latin-1")
            elif name == b"content-length" and content_length is None:
                content_length = value.decode("latin-1")
            elif name == b"idempotency-key" and key is None:
                key = value.decode("latin-1")
        if self._admission and (denied := self._admit(Request(scope))) is not None:
            return denied
        try:
            if media_type(content_type or "") not in _JSON_TYPES:
                raise BodyError(415, f"send the body as {' or '.join(sorted(_JSON_TYPES))}")
            body = await self.bodies.read(receive, content_length, self.settings.max_body_bytes)
            event, event_id = self._validate(body, self._idempotency_key(key))
            duplicate = await self._publish(event, body, event_id)
        except BodyError as exc:
            self.metrics.errors.labels(f"http_{exc.status}").inc()
            return problem(exc.status, exc.detail)
        except Invalid as exc:
            self.metrics.errors.labels("invalid").inc()
            extra: dict[str, Any] = {} if exc.field is None else {"field": exc.field}
            return problem(exc.status, exc.detail, **extra)
        except Unavailable as exc:
            return self._unavailable(exc)
        return _encoder.encode(Accepted("queued", event_id, duplicate))

    async def post_batch(self, request: Request) -> Response:
        if (denied := self._admit(request)) is not None:
            return self._answer(request, "batch", denied)
        try:
            body = await self._body(request, _BATCH_TYPES, self.settings.max_batch_bytes)
            raws = self._split_batch(body, media_type(request.headers.get("content-type", "")))
        except BodyError as exc:
            return self._answer(request, "batch", problem(exc.status, exc.detail))
        except Invalid as exc:
            return self._answer(request, "batch", problem(exc.status, exc.detail))
        if len(raws) > self.settings.batch_max_items:
            detail = f"{len(raws)} events in one batch; the limit is {self.settings.batch_max_items}"
            return self._answer(request, "batch", problem(413, detail, slug="batch-too-large"))
        items = await asyncio.gather(*(self._batch_item(i, raw) for i, raw in enumerate(raws)))
        accepted = sum(item.status == "queued" for item in items)
        overall = "queued" if accepted == len(items) else "rejected" if accepted == 0 else "partial"
        headers = self._retry_after if any(i.error and i.error["status"] == 503 for i in items) else None
        result = _encoder.encode(BatchResult(overall, accepted, len(items) - accepted, list(items)))
        status = 202 if overall == "queued" else 207
        return self._answer(
            request, "batch", Response(result, status, headers, media_type="application/json")
        )

    def _split_batch(self, body: bytes, kind: str) -> list[bytes]:
        if kind == "application/json":
            try:
                return [bytes(raw) for raw in decode_events(body)]
            except (msgspec.DecodeError, EventInvalid) as exc:
                invalid = _invalid(exc)
                raise Invalid(invalid.status, f"expected a JSON array of events: {invalid.detail}") from None
        return [line for line in body.split(b"\n") if line.strip()]

    async def _batch_item(self, index: int, raw: bytes) -> BatchItem:
        try:
            event, event_id = self._validate(raw, None)
            duplicate = await self._publish(event, raw, event_id)
        except Invalid as exc:
            self.metrics.errors.labels("invalid").inc()
            return BatchItem(index, "error", error=exc.as_dict())
        except Unavailable as exc:
            self.metrics.errors.labels(exc.kind).inc()
            return BatchItem(index, "error", error={"status": 503, "detail": exc.detail})
        return BatchItem(index, "queued", event_id, duplicate)

    def _mongo_unavailable(self, exc: pymongo.errors.PyMongoError) -> ProblemResponse:
        self.metrics.errors.labels("mongo").inc()
        detail = f"MongoDB is unavailable ({type(exc).__name__})"
        return problem(503, detail, headers=self._retry_after)

    async def get_event(self, request: Request) -> Response:
        if (denied := self._admit(request)) is not None:
            return self._answer(request, "event", denied)
        event_id = request.path_params["event_id"]
        collection = store.processed_events(store.database(self._mongo, self._mongo_settings))
        try:
            doc = await collection.find_one({"eventId": event_id}, {"_id": 0})
        except pymongo.errors.PyMongoError as exc:
            return self._answer(request, "event", self._mongo_unavailable(exc))
        if doc is None:
            detail = "no processed or failed event has this id (it may still be queued)"
            return self._answer(
                request, "event", problem(404, detail, slug="unknown-event", eventStatus="unknown")
            )
        body = _encoder.encode(shown(doc))
        return self._answer(request, "event", Response(body, 200, media_type="application/json"))

    async def get_patient(self, request: Request) -> Response:
        """``/patients/{patientId}/events`` (the timeline) and ``/patients/{patientId}`` (the
        summary): one route, because the id may hold an encoded ``/`` that only the undecoded
        path (``raw_path``) still tells apart from the separator."""
        if (denied := self._admit(request)) is not None:
            return self._answer(request, "patient", denied)
        raw = request.scope.get("raw_path") or quote(request.scope["path"]).encode("ascii")
        route = "patient"
        try:
            where = parse_patient_path(raw)
            if where is None:
                return self._answer(request, route, problem(404, "Not Found"))
            db = store.database(self._mongo, self._mongo_settings)
            body: Any
            if where.events:
                route = "timeline"
                query = parse_timeline_query(request.query_params.multi_items())
                body = await read_timeline(db, where.patient_id, query)
            else:
                if request.query_params:
                    name = next(iter(request.query_params))
                    raise BadParameter(name, "unknown parameter; the summary takes none")
                body = await read_summary(db, self.publisher.jetstream(), where.patient_id)
        except BadParameter as exc:
            self.metrics.errors.labels("invalid").inc()
            invalid = problem(
                400,
                f"{exc.name}: {exc.detail}",
                slug="invalid-parameter",
                title="Invalid parameter",
                field=exc.name,
            )
            return self._answer(request, route, invalid)
        except pymongo.errors.PyMongoError as exc:
            return self._answer(request, route, self._mongo_unavailable(exc))
        except Unavailable as exc:
            return self._answer(request, route, self._unavailable(exc))
        except (nats.errors.Error, TimeoutError, StreamMissingError) as exc:
            self.metrics.errors.labels("nats").inc()
            detail = f"JetStream does not answer ({type(exc).__name__}); the pending count is unknown"
            return self._answer(
                request, route, problem(503, detail, slug="unavailable-nats", headers=self._retry_after)
            )
        answer = Response(_encoder.encode(body), 200, media_type="application/json")
        return self._answer(request, route, answer)

    async def openapi(self, request: Request) -> Response:
        return Response(openapi_document(), media_type="application/json")

    def warnings(self) -> list[str]:
        """Shown by a ready ``/readyz``: NATS that does not fsync before it acknowledges."""
        verdict = self.nats_sync.current
        return [verdict.message] if verdict.state is SyncState.UNSAFE else []

    async def _check_nats_sync(self) -> None:
        self.metrics.nats_sync_always.set((await self.nats_sync.refresh()).state.gauge)

    async def _watch_nats_sync(self) -> None:
        while True:
            await asyncio.sleep(self.nats_sync.every_s)
            await self._check_nats_sync()

    # -- lifecycle -------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        await self.publisher.start()
        self.bodies.start()
        await self._check_nats_sync()  # logged at start: a warning when NATS does not fsync
        watch = asyncio.create_task(self._watch_nats_sync(), name="nats-sync-watch")
        log.info(
            "ingest ready",
            extra={
                "auth": self.auth.enabled,
                "rate_limit_per_s": self.limiter.rate if self.limiter.enabled else 0,
            },
        )
        try:
            yield
        finally:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
            await self.publisher.close()
            await self.bodies.close()
            await self._mongo.close()
            tracing.shutdown()
            log.info("ingest stopped")

    def app(self) -> ASGIApp:
        """Starlette for every route, with ``POST /events`` sent straight to its handler."""
        routes = [
            Route("/events", _AsgiEndpoint(self.post_event), methods=["POST"]),
            Route("/events/batch", self.post_batch, methods=["POST"]),
            Route("/events/{event_id:str}", self.get_event, methods=["GET"]),
            Route(f"/patients/{{patient:{ANY_PATH}}}", self.get_patient, methods=["GET"]),
            Route("/openapi.json", self.openapi, methods=["GET"]),
            *probe_routes("ingest-service", self.publisher.readiness, self.metrics.registry, self.warnings),
        ]
        starlette = Starlette(
            routes=routes,
            lifespan=self.lifespan,
            exception_handlers={HTTPException: http_exception_handler},
        )
        if tracing.enabled:  # every route through the tracing middleware
            tracing.instrument_starlette(starlette)
            return starlette
        return _Front(starlette, self.post_event)


class _AsgiEndpoint:
    """A bound ASGI handler as a route endpoint (Starlette takes a bare method for a request
    handler)."""

    def __init__(self, handler: ASGIApp) -> None:
        self._handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._handler(scope, receive, send)


class _Front:
    """``POST /events`` straight to its handler; everything else (other routes, ``/events`` in
    any other form, lifespan) through Starlette."""

    def __init__(self, app: Starlette, post_event: ASGIApp) -> None:
        self.app = app
        self._post_event = post_event

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/events" and scope["method"] == "POST":
            await self._post_event(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def create_app() -> ASGIApp:
    """The app from environment variables (uvicorn's factory entry point, one per worker)."""
    logs.configure(load(LogSettings), "ingest")
    if tracing.configure(load(TracingSettings), "medevents-ingest"):
        tracing.instrument_pymongo()
    service = IngestService(
        load(IngestSettings), load(NatsSettings), load(StreamSettings), load(MongoSettings)
    )
    return service.app()
