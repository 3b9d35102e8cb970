"""``medevents up`` plus ``medevents loadgen``, as a user runs them: events sent with duplicates,
processed by a real processor, verified from MongoDB (each accepted event stored once, in
per-patient order), and the report written as JSON."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from medevents.local import free_port

MEDEVENTS = str(Path(sys.executable).parent / "medevents")


def test_loadgen_verifies_a_running_system(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {
        **os.environ,
        "PORT": str(free_port()),
        "PROCESSOR_DELAY_MIN_MS": "0",
        "PROCESSOR_DELAY_MAX_MS": "50",
        "MEDEVENTS_PARTITIONS": "4",
    }
    env.pop("MONGO_URI", None)  # the embedded server, as `make run` uses it
    up = subprocess.Popen(
        [MEDEVENTS, "up", "--data-dir", str(data), "--processors", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 90
        while not (data / "endpoints.json").exists():
            assert up.poll() is None, "medevents up exited"
            assert time.monotonic() < deadline, "medevents up did not write endpoints.json"
            time.sleep(0.2)
        report = tmp_path / "report.json"
        argv = ["loadgen", "--data-dir", str(data), "--count", "400", "--patients", "40"]
        argv += ["--duplicates", "0.1", "--concurrency", "8", "--wait", "90", "--json", str(report)]
        result = subprocess.run(
            [MEDEVENTS, *argv], env=env, capture_output=True, text=True, timeout=180, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr
        out = json.loads(report.read_text())
        v = out["verification"]
        assert v["ok"] and v["order_checked"]
        assert v["expected"] == out["accepted"] == v["stored"]
        assert out["duplicates"] > 0
        assert out["processing"]["done"] is True
        assert "verified    OK" in result.stdout
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(60)
