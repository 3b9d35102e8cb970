"""`medevents operator` and `medevents status` as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from medevents.local import EmbeddedNats

MEDEVENTS = str(Path(sys.executable).parent / "medevents")


def test_status_without_nats_fails_cleanly(tmp_path: Path) -> None:
    env = {**os.environ, "NATS_URL": "nats://127.0.0.1:1"}
    result = subprocess.run(
        [MEDEVENTS, "status", "--data-dir", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "cannot read NATS at nats://127.0.0.1:1" in result.stderr


def test_status_json_reads_the_url_from_the_data_dir(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    (tmp_path / "endpoints.json").write_text(json.dumps({"nats": nats_server.url}))
    env = {k: v for k, v in os.environ.items() if k != "NATS_URL"}
    result = subprocess.run(
        [MEDEVENTS, "status", "--json", "--data-dir", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # No stream yet: a clear message, not a traceback.
    assert result.returncode == 1 and "stream EVENTS does not exist" in result.stderr
