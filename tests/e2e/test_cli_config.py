"""Bad configuration stops a command at start-up with a message naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

MEDEVENTS = str(Path(sys.executable).parent / "medevents")


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"PORT": "http"}, "PORT"),
        ({"NATS_URL": "localhost:4222"}, "NATS_URL"),
        ({"MEDEVENTS_PARTITIONS": "0"}, "MEDEVENTS_PARTITIONS"),
        ({"INGEST_MAX_BODY_BYTES": "ten"}, "INGEST_MAX_BODY_BYTES"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
    ],
)
def test_ingest_refuses_bad_configuration(env: dict[str, str], variable: str) -> None:
    result = subprocess.run(
        [MEDEVENTS, "ingest"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("medevents: configuration error: " + variable), result.stderr
