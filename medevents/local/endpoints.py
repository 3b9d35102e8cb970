"""``<data dir>/endpoints.json``: the URLs ``medevents up`` serves, for the commands that talk to it
(``status``, ``events``, ``loadgen``)."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["ENDPOINTS_FILE", "read_endpoints"]

ENDPOINTS_FILE = "endpoints.json"


def read_endpoints(data_dir: Path) -> dict[str, str]:
    """The URLs ``medevents up`` wrote (``ingest``, ``nats``, ``mongo``, ...), or nothing when it
    has not run there."""
    path = data_dir / ENDPOINTS_FILE
    if not path.exists():
        return {}
    found = json.loads(path.read_text())
    return {k: v for k, v in found.items() if isinstance(v, str)}
