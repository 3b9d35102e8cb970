"""The per-event debug line: written only at DEBUG (its patient hash is not free), and then with
the event id and the patient's hash, never the patient id."""

from __future__ import annotations

import logging

import pytest

from medevents import logs

from .conftest import RunningIngest

EVENT = b'{"patientId":"patient-secret-42","type":"vitals","data":{},"ts":"2025-10-01T10:30:00Z"}'
JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize("level", [logging.DEBUG, logging.INFO])
async def test_event_queued_line_only_at_debug(
    ingest: RunningIngest, caplog: pytest.LogCaptureFixture, level: int
) -> None:
    caplog.set_level(level, logger="medevents.ingest")
    response = await ingest.client.post("/events", content=EVENT, headers=JSON)
    assert response.status_code == 202
    queued = [r for r in caplog.records if r.getMessage() == "event queued"]
    if level == logging.INFO:
        assert queued == []
        return
    [record] = queued
    assert record.__dict__["eventId"] == response.json()["eventId"]
    assert record.__dict__["patient"] == logs.patient_ref("patient-secret-42")
    assert "patient-secret-42" not in repr(record.__dict__)
