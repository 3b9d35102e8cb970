"""Bad configuration stops every command at start-up with a message naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

MEDEVENTS = str(Path(sys.executable).parent / "medevents")


@pytest.mark.parametrize(
    ("command", "env", "variable"),
    [
        ("ingest", {"PORT": "http"}, "PORT"),
        ("ingest", {"NATS_URL": "localhost:4222"}, "NATS_URL"),
        ("ingest", {"MEDEVENTS_PARTITIONS": "0"}, "MEDEVENTS_PARTITIONS"),
        ("ingest", {"INGEST_MAX_BODY_BYTES": "ten"}, "INGEST_MAX_BODY_BYTES"),
        ("ingest", {"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        ("processor", {"PROCESSOR_PORT": "http"}, "PROCESSOR_PORT"),
        ("processor", {"PROCESSOR_HANDLER": "nohandler"}, "PROCESSOR_HANDLER"),
        ("processor", {"PROCESSOR_HANDLER": "medevents.nothing_here:handle"}, "PROCESSOR_HANDLER"),
        ("processor", {"PROCESSOR_DELAY_MIN_MS": "7000"}, "PROCESSOR_DELAY_MIN_MS"),
        ("processor", {"PROCESSOR_CONCURRENCY": "0"}, "PROCESSOR_CONCURRENCY"),
        ("processor", {"MONGO_URI": "postgres://x"}, "MONGO_URI"),
        ("operator", {"OPERATOR_KUBE_API_URL": "kubernetes:443"}, "OPERATOR_KUBE_API_URL"),
        ("operator", {"OPERATOR_LIVENESS_PORT": "http"}, "OPERATOR_LIVENESS_PORT"),
        ("operator", {"OPERATOR_WATCH_SERVER_TIMEOUT_S": "600"}, "OPERATOR_WATCH_CLIENT_TIMEOUT_S"),
        ("up", {"MEDEVENTS_NATS_SYNC": "never"}, "MEDEVENTS_NATS_SYNC"),
    ],
)
def test_commands_refuse_bad_configuration(command: str, env: dict[str, str], variable: str) -> None:
    result = subprocess.run(
        [MEDEVENTS, command],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("medevents: configuration error: " + variable), result.stderr
