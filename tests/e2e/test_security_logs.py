"""No patient data in logs or traces: a whole `medevents up` run at DEBUG with tracing on (OTLP to
a receiver in the test), fed events with distinctive patient ids, data values and tokens
(accepted, rejected, unauthorised, batched, looked up, dead-lettered, read back through the
patient routes, whose paths carry the id), then every log line it and its children wrote and every
exported span (the raw OTLP bytes) is searched for them.

The scan covers every log file under the data directory, so processors and the operator are
checked as soon as `medevents up` runs them. Event ids are logged by design (they are how
operators trace an event): clients must not build them from patient data (docs/SECURITY.md).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import time
from pathlib import Path
from urllib.parse import quote, quote_plus

import httpx
import msgspec

from medevents.subjects import patient_token
from medevents.timeline import patient_path

from .localup import LocalUp
from .otlp import OtlpSink

MARK = os.urandom(4).hex()
TOKEN = f"tok-SECRET-{MARK}"
WRONG_TOKEN = f"wrongtok-SECRET-{MARK}"
PATIENTS = [f"PATIENT-SECRET-{MARK}", f"Zoë Secretpatient {MARK}", f"2.16.840.1.{int(MARK, 16)}"]
DATA_VALUES = [f"DATA-SECRET-{MARK}", f"diagnosis-{MARK}-é"]
DATA_NUMBER = 7_700_000_000 + int(MARK, 16) % 1000  # a distinctive number in data


def secrets() -> list[str]:
    """Everything that must never appear, in every form it could be written in."""
    plain = [TOKEN, WRONG_TOKEN, *PATIENTS, *DATA_VALUES, str(DATA_NUMBER)]
    forms = set(plain)
    for value in plain:
        forms.add(json.dumps(value)[1:-1])  # JSON with \\u escapes
        forms.add(value.encode("unicode_escape").decode("ascii"))  # repr-style escapes
    forms |= {patient_token(p) for p in PATIENTS}  # subject tokens are reversible: patient data too
    forms |= {quote(value, safe="") for value in plain} | {quote_plus(value) for value in plain}  # in URLs
    return sorted(forms)


def patient_ref(key: str, patient: str) -> str:
    return hmac.new(key.encode(), patient.encode(), hashlib.sha256).hexdigest()[:16]


def events() -> list[dict[str, object]]:
    return [
        {
            "patientId": patient,
            "type": "vitals",
            "data": {"note": DATA_VALUES[i % 2], "value": DATA_NUMBER, "nested": {"v": [DATA_VALUES[1]]}},
            "ts": "2025-10-01T10:30:00Z",
        }
        for i, patient in enumerate(PATIENTS)
    ]


# Fails every event whose data says so, quoting it in the error (as careless handlers do).
HANDLER = """
from medevents.processor import PermanentError


async def handle(event, context):
    if "fail" in event.data:
        raise PermanentError(f"cannot process {event.patientId}: {event.data}")
    return {"status": "success", "message": "ok"}
"""


def test_no_patient_data_or_token_in_any_log_or_span(tmp_path: Path) -> None:
    (tmp_path / "leaky_handler.py").write_text(HANDLER)
    sink = OtlpSink().__enter__()
    env = {
        "LOG_LEVEL": "DEBUG",
        "INGEST_AUTH_TOKENS": f"other-token,{TOKEN}",
        "PROCESSOR_HANDLER": "leaky_handler:handle",
        "PYTHONPATH": str(tmp_path),
        **sink.env(),
    }
    up = LocalUp(tmp_path / "data", env=env)
    try:
        up.start()
        auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        with httpx.Client(base_url=up.url, timeout=30) as client:
            ids = []
            for body in events():
                response = client.post("/events", content=msgspec.json.encode(body), headers=auth)
                assert response.status_code == 202, response.text
                ids.append(response.json()["eventId"])
            # The same events again (duplicates), as a batch, and as NDJSON.
            batch = client.post("/events/batch", content=msgspec.json.encode(events()), headers=auth)
            assert batch.status_code == 202
            ndjson = b"\n".join(msgspec.json.encode({**e, "type": "ndjson"}) for e in events())
            assert (
                client.post(
                    "/events/batch", content=ndjson, headers={**auth, "Content-Type": "application/x-ndjson"}
                ).status_code
                == 202
            )
            # Rejections that quote the input back to the client must not quote it to the logs.
            for bad in (
                {**events()[0], "patientId": PATIENTS[0] + "\n"},
                {**events()[1], "ts": "not a time"},
                {**events()[0], "data": {"$" + DATA_VALUES[0]: 1}},
                {**events()[2], "unknown": DATA_VALUES[0]},
            ):
                assert (
                    client.post("/events", content=msgspec.json.encode(bad), headers=auth).status_code == 422
                )
            assert (
                client.post(
                    "/events", content=b'{"patientId":"' + PATIENTS[0].encode(), headers=auth
                ).status_code
                == 400
            )
            wrong = {**auth, "Authorization": f"Bearer {WRONG_TOKEN}"}
            assert (
                client.post("/events", content=msgspec.json.encode(events()[0]), headers=wrong).status_code
                == 401
            )
            assert (
                client.post(
                    "/events",
                    content=msgspec.json.encode(events()[0]),
                    headers={**auth, "Idempotency-Key": f"key-{MARK}"},
                ).status_code
                == 202
            )
            failing = {**events()[1], "data": {"fail": DATA_VALUES[0]}}
            response = client.post("/events", content=msgspec.json.encode(failing), headers=auth)
            assert response.status_code == 202
            ids.append(response.json()["eventId"])
            for event_id in ids:  # every event processed (or dead-lettered): all spans are in
                deadline = time.monotonic() + 60
                while client.get(f"/events/{event_id}", headers=auth).status_code != 200:
                    assert time.monotonic() < deadline, f"{event_id} not processed"
                    time.sleep(0.2)
            assert client.get(f"/events/{PATIENTS[0]}", headers=auth).status_code == 404
            # The patient routes carry the id in the path (and the query): nothing may log it.
            for patient in PATIENTS:
                route = patient_path(patient)
                assert client.get(route, headers=auth).status_code == 200
                assert client.get(route + "/events", headers=auth).status_code == 200
                filters = {"type": "vitals", "since": "2025-10-01T10:00:00+02:00", "limit": "1"}
                assert client.get(route + "/events", params=filters, headers=auth).status_code == 200
                invalid: list[dict[str, str]] = [{"limit": "0"}, {"type": patient + "\x07"}, {patient: "1"}]
                for params in [*invalid, {"since": patient}]:
                    assert client.get(route + "/events", params=params, headers=auth).status_code == 400
                assert client.get(route + "/events", headers=wrong).status_code == 401
                assert client.get(route + "/events/x", headers=auth).status_code == 404
        up.signal(signal.SIGTERM)
        assert up.wait(60) == 0
    finally:
        up.stop()
        sink.__exit__()

    files = list(up.log_files())
    names = {f.name for f in files}
    assert {"ingest.log", "runner-0.out", "nats-server.log"} <= names, names
    leaks = []
    for path in files:
        text = path.read_bytes().decode("utf-8", "replace")
        leaks += [(path.name, secret) for secret in secrets() if secret in text]
    assert not leaks, f"patient data or tokens in logs: {leaks}"

    # The spans: every byte exported, whatever span, attribute, event or resource it is in.
    exported = b"".join(sink.raw).decode("utf-8", "replace")
    span_leaks = [secret for secret in secrets() if secret in exported]
    assert not span_leaks, f"patient data or tokens in exported spans: {span_leaks}"
    services = {s.service for s in sink.spans}
    assert {"medevents-ingest", "medevents-processor"} <= services, services
    names = {s.name for s in sink.spans}
    assert {"GET /events/{event_id}", "dead-letter", "handle", "write events"} <= names, names
    processed = [s for s in sink.spans if s.name == "process EVENTS"]
    assert {s.attributes["medevents.event_id"] for s in processed} >= set(ids)
    key = (tmp_path / "data" / "patient-hash.key").read_text().strip()
    refs = {patient_ref(key, p) for p in PATIENTS}
    assert {s.attributes["medevents.patient"] for s in processed} == refs

    # The scan saw the DEBUG lines that name each event: by event id and the keyed patient hash.
    ingest_log = (tmp_path / "data" / "logs" / "ingest.log").read_text()
    for patient in PATIENTS:
        assert patient_ref(key, patient) in ingest_log
    assert all(event_id in ingest_log for event_id in ids)
