"""Structured logs: one JSON object per line, never patient data.

Log the event id and :func:`patient_ref` (a keyed hash of the patient id), never the patient id
or event data. Exception messages can quote stored values, so only the exception's type and
stack are written, never its message.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import sys
import time
import traceback
from typing import Any

import msgspec

from medevents.config import LogSettings

__all__ = ["configure", "patient_ref", "use_patient_hash_key"]

_key: bytes = os.urandom(32)
_encoder = msgspec.json.Encoder()
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "color_message",
}


def patient_ref(patient_id: str) -> str:
    """A stable, keyed, non-reversible reference to a patient for logs (16 hex digits)."""
    return hmac.new(_key, patient_id.encode("utf-8"), hashlib.sha256).hexdigest()[:16]


class JsonFormatter(logging.Formatter):
    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "component": self.component,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            exc_type, _, tb = record.exc_info
            line["error"] = exc_type.__name__
            line["stack"] = "".join(traceback.format_tb(tb))
        return _encoder.encode(line).decode("utf-8", "replace")


def use_patient_hash_key(settings: LogSettings) -> None:
    """Key :func:`patient_ref` with ``MEDEVENTS_PATIENT_HASH_KEY`` when it is set (else the
    process keeps its random key)."""
    global _key
    if settings.patient_hash_key:
        _key = settings.patient_hash_key.encode("utf-8")


def configure(settings: LogSettings, component: str) -> None:
    """Route every logger (ours, uvicorn's, kopf's, the drivers') through the JSON formatter."""
    use_patient_hash_key(settings)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(component))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "kopf", "nats", "pymongo"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("pymongo").setLevel(logging.WARNING)
