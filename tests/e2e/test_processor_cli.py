"""``medevents processor`` refuses bad configuration at start-up, naming the variable."""

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
        ({"PROCESSOR_PORT": "http"}, "PROCESSOR_PORT"),
        ({"PROCESSOR_HANDLER": "nohandler"}, "PROCESSOR_HANDLER"),
        ({"PROCESSOR_HANDLER": "medevents.nothing_here:handle"}, "PROCESSOR_HANDLER"),
        ({"PROCESSOR_DELAY_MIN_MS": "7000"}, "PROCESSOR_DELAY_MIN_MS"),
        ({"PROCESSOR_CONCURRENCY": "0"}, "PROCESSOR_CONCURRENCY"),
        ({"MONGO_URI": "postgres://x"}, "MONGO_URI"),
    ],
)
def test_processor_refuses_bad_configuration(env: dict[str, str], variable: str) -> None:
    result = subprocess.run(
        [MEDEVENTS, "processor"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("medevents: configuration error: " + variable), result.stderr
