"""The OpenAPI 3.1 document, generated from the msgspec types the service decodes and encodes."""

from __future__ import annotations

import functools
from typing import Any

import msgspec

from medevents.model import EVENT_ID_PATTERN, MAX_DATA_DEPTH, Event, EventType, PatientId
from medevents.timeline import DEFAULT_LIMIT, MAX_LIMIT

from .patients import MAX_AFTER, SCAN_BUDGET
from .wire import Accepted, BatchResult, PatientSummary, Problem, ProcessedEvent, TimelinePage

__all__ = ["openapi_document"]


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def _json(ref: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": ref}}}}


_ERRORS = {
    "400": _problem("Malformed JSON"),
    "401": _problem("Missing or invalid bearer token (when auth is on)"),
    "408": _problem("The body did not arrive in time"),
    "413": _problem("Body too large"),
    "415": _problem("Wrong content type"),
    "422": _problem("Invalid event; `field` names the failing field"),
    "429": _problem("Rate limit of this token (or address) exceeded; retry after Retry-After"),
    "503": _problem("Not durable now (NATS down, timeout, stream full); retry after Retry-After"),
}


_REF = "#/components/schemas/"


def _patient_parameter() -> dict[str, Any]:
    return {
        "name": "patientId",
        "in": "path",
        "required": True,
        "description": "The patient id as one percent-encoded path segment: `/` as `%2F`, and `.` "
        "or `..` as `%2E` or `%2E%2E` (clients remove dot segments)",
        "schema": msgspec.json.schema(PatientId),
    }


def _timeline_parameters() -> list[dict[str, Any]]:
    def query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
        return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}

    date_time = {"type": "string", "format": "date-time"}
    return [
        _patient_parameter(),
        query(
            "after",
            "Cursor: the stream sequence to start after (a page's `cursor`)",
            {"type": "integer", "minimum": 0, "maximum": MAX_AFTER, "default": 0},
        ),
        query(
            "limit",
            "Most events in the page",
            {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
        ),
        query("type", "Only events of this type", msgspec.json.schema(EventType)),
        query("since", "Only events whose `ts` is at or after this time (RFC 3339 with offset)", date_time),
        query("until", "Only events whose `ts` is before this time (RFC 3339 with offset)", date_time),
    ]


_READ_ERRORS = {
    "400": _problem("Invalid path or query parameter; `field` names it"),
    "401": _ERRORS["401"],
    "429": _ERRORS["429"],
}


def _event_data_schemas() -> dict[str, Any]:
    """What ``data`` accepts, which msgspec's ``dict[str, Any]`` cannot say: keys neither starting
    with `$` nor holding NUL, integers within 64 bits (the depth limit is only described)."""
    value_ref = {"$ref": "#/components/schemas/EventDataValue"}
    return {
        "EventData": {
            "type": "object",
            "description": f"Free-form event data, at most {MAX_DATA_DEPTH} levels deep",
            "propertyNames": {"pattern": "^(?!\\$)[^\\u0000]*$"},
            "additionalProperties": value_ref,
        },
        "EventDataValue": {
            "description": (
                "Integer literals (no fraction, no exponent) must fit in 64 bits; numbers with a "
                "fraction or an exponent are doubles of any finite size"
            ),
            "anyOf": [
                {"type": "null"},
                {"type": "boolean"},
                {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1},
                {"type": "number", "not": {"type": "integer"}},
                {"type": "string"},
                {"type": "array", "items": value_ref},
                {"$ref": "#/components/schemas/EventData"},
            ],
        },
    }


@functools.cache
def openapi_document() -> bytes:
    _, components = msgspec.json.schema_components(
        [Event, Accepted, BatchResult, Problem, ProcessedEvent, TimelinePage, PatientSummary],
        ref_template="#/components/schemas/{name}",
    )
    components["Event"]["properties"]["data"] = {"$ref": "#/components/schemas/EventData"}
    components["TimelinePage"]["properties"]["events"]["items"] = {"$ref": f"{_REF}ProcessedEvent"}
    components |= _event_data_schemas()
    security: list[dict[str, list[str]]] = [{"bearer": []}, {}]
    doc = {
        "openapi": "3.1.0",
        "info": {
            "title": "medevents ingest API",
            "version": "1",
            "description": "Accepts medical events; 202 means durably stored in NATS JetStream.",
            "license": {"name": "ISC", "identifier": "ISC"},
        },
        "paths": {
            "/events": {
                "post": {
                    "operationId": "postEvent",
                    "summary": "Queue one event",
                    "security": security,
                    "parameters": [
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "required": False,
                            "schema": {
                                "type": "string",
                                "minLength": 1,
                                "maxLength": 128,
                                "pattern": EVENT_ID_PATTERN,
                            },
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Event"}}},
                    },
                    "responses": {"202": _json("#/components/schemas/Accepted", "Durably queued"), **_ERRORS},
                }
            },
            "/events/batch": {
                "post": {
                    "operationId": "postEvents",
                    "summary": "Queue many events (JSON array or NDJSON); answers per item",
                    "security": security,
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}}
                            },
                            "application/x-ndjson": {
                                "schema": {
                                    "type": "array",
                                    "description": "One event per line",
                                    "items": {"$ref": "#/components/schemas/Event"},
                                }
                            },
                        },
                    },
                    "responses": {
                        "202": _json("#/components/schemas/BatchResult", "All events queued"),
                        "207": _json("#/components/schemas/BatchResult", "Some events failed; see items"),
                        **_ERRORS,
                    },
                }
            },
            "/events/{eventId}": {
                "get": {
                    "operationId": "getEvent",
                    "summary": "Where an event is: processed (with its result) or failed",
                    "security": security,
                    "parameters": [
                        {"name": "eventId", "in": "path", "required": True, "schema": {"type": "string"}}
                    ],
                    "responses": {
                        "200": _json("#/components/schemas/ProcessedEvent", "The processed or failed event"),
                        "401": _ERRORS["401"],
                        "404": _problem("Unknown: not processed yet, or never accepted"),
                        "429": _ERRORS["429"],
                        "503": _problem("MongoDB unavailable"),
                    },
                }
            },
            "/patients/{patientId}/events": {
                "get": {
                    "operationId": "getPatientEvents",
                    "summary": "A patient's processed and failed events in processing order, by pages",
                    "description": (
                        "Follow `next` until it is null; later, ask again with `after=<cursor>` for "
                        "events processed since. A filtered page examines at most "
                        f"{SCAN_BUDGET} events and may hold fewer than `limit`."
                    ),
                    "security": security,
                    "parameters": _timeline_parameters(),
                    "responses": {
                        "200": _json("#/components/schemas/TimelinePage", "One page of the timeline"),
                        **_READ_ERRORS,
                        "503": _problem("MongoDB unavailable"),
                    },
                }
            },
            "/patients/{patientId}": {
                "get": {
                    "operationId": "getPatient",
                    "summary": "A patient's stored and failed counts, last event, and events still pending",
                    "security": security,
                    "parameters": [_patient_parameter()],
                    "responses": {
                        "200": _json("#/components/schemas/PatientSummary", "The patient's summary"),
                        **_READ_ERRORS,
                        "503": _problem("MongoDB or JetStream unavailable"),
                    },
                }
            },
            "/health": {"get": {"operationId": "health", "responses": {"200": {"description": "Alive"}}}},
            "/livez": {"get": {"operationId": "livez", "responses": {"200": {"description": "Alive"}}}},
            "/readyz": {
                "get": {
                    "operationId": "readyz",
                    "responses": {
                        "200": {"description": "Ready"},
                        "503": _problem("Not ready, with reasons"),
                    },
                }
            },
            "/metrics": {
                "get": {"operationId": "metrics", "responses": {"200": {"description": "Prometheus"}}}
            },
        },
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
    return msgspec.json.encode(doc)
