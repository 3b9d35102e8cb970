"""The events the load generator sends: unique, padded to a size, numbered per patient.

Each patient's events carry ``data.seq`` = 0, 1, 2, ... in the order the generator sends them, and
the generator never has two of a patient's events in flight at once, so the order a patient's
events must be applied in is known without asking the server.
"""

from __future__ import annotations

import datetime as dt

import msgspec

from medevents.ids import derive_event_id
from medevents.model import decode_event

__all__ = ["EventFactory", "event_id_of"]

_BASE_TS = dt.datetime(2025, 10, 1, tzinfo=dt.UTC)
_encode = msgspec.json.Encoder().encode


class EventFactory:
    """Builds request bodies in the old demo's shape for one run.

    ``run_id`` makes patient ids (``lg-<run>-<n>``) unique to the run, so a run's events never
    de-duplicate against an earlier run's and its documents can be found again for verification.
    """

    def __init__(self, run_id: str, patients: int, payload_bytes: int = 0) -> None:
        if patients < 1:
            raise ValueError("patients must be at least 1")
        self.run_id = run_id
        self.patients = patients
        self.payload_bytes = payload_bytes
        self._pad = ""
        # Pad so that a typical body is about payload_bytes long (a body never shrinks below the
        # bare event); the sequence number's digits make bodies differ by a few bytes.
        bare = len(self.body(patients - 1, 1000))
        self._pad = "x" * max(0, payload_bytes - bare - len(',"pad":""'))

    def patient_id(self, patient: int) -> str:
        return f"lg-{self.run_id}-{patient}"

    def body(self, patient: int, seq: int) -> bytes:
        """The JSON body of patient ``patient``'s event number ``seq``."""
        data: dict[str, object] = {"seq": seq, "heartRate": 60 + seq % 40}
        if self._pad:
            data["pad"] = self._pad
        ts = _BASE_TS + dt.timedelta(seconds=seq)
        return _encode(
            {
                "patientId": self.patient_id(patient),
                "type": "vitals",
                "data": data,
                "ts": ts.isoformat().replace("+00:00", "Z"),
            }
        )


def event_id_of(body: bytes) -> str:
    """The id ingest derives for ``body`` (for events whose answer never came back)."""
    return derive_event_id(decode_event(body))
