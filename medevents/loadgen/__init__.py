"""``medevents loadgen``: a load generator that also verifies what the system stored.

A client-side tool in the kernel (it talks to ingest over HTTP and reads NATS and MongoDB; it
imports no component).
"""

from .report import report, text
from .runner import LoadResult, LoadSpec, run_load
from .verify import SentEvent, StoredEvent, Verification, verify

__all__ = [
    "LoadResult",
    "LoadSpec",
    "SentEvent",
    "StoredEvent",
    "Verification",
    "report",
    "run_load",
    "text",
    "verify",
]
