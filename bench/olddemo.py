"""Benchmark 7, the old demo's own load test as its README publishes it:
``ab -n 1000 -c 10 -T application/json -p event.json http://localhost:3000/events``, against one
ingest worker (on a free port instead of 3000). Every request carries the same body, so after the
first one JetStream answers "duplicate" (still 202): exactly what the old demo's test sent."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess

from ._common import Outcome, Row, Servers, start_ingest

NAME = "olddemo"
TITLE = "7. The old demo's load test: ab -n 1000 -c 10 (1 worker)"

EVENT = b"""{
  "patientId": "patient-123",
  "type": "vitals",
  "data": {
    "heartRate": 72,
    "bloodPressure": "120/80"
  },
  "ts": "2025-10-01T10:30:00Z"
}
"""


def _number(pattern: str, text: str) -> float | None:
    match = re.search(pattern, text)
    return float(match.group(1)) if match else None


async def run() -> Outcome:
    if shutil.which("ab") is None:
        note = "skipped: ab not installed (apt-get install apache2-utils)"
        return Outcome([Row("skipped", note, None)], {"skipped": note})
    with Servers() as servers:
        event = servers.dir / "event.json"
        event.write_bytes(EVENT)
        ingest = start_ingest(servers, 1)
        try:
            argv = ["ab", "-n", "1000", "-c", "10", "-T", "application/json", "-p", str(event)]
            out = await asyncio.to_thread(
                subprocess.run, [*argv, ingest.url + "/events"], capture_output=True, text=True, check=True
            )
        finally:
            ingest.stop()
    text = out.stdout
    complete = _number(r"Complete requests:\s+(\d+)", text)
    failed = _number(r"Failed requests:\s+(\d+)", text) or 0.0
    # ab counts an answer whose length differs from the first one's as "failed (Length)": the
    # first answer says "duplicate":false, the 999 others "duplicate":true, one byte shorter.
    length_only = _number(r"Length: (\d+)", text) or 0.0
    non_2xx = _number(r"Non-2xx responses:\s+(\d+)", text) or 0.0  # ab prints it only when > 0
    ok = complete == 1000 and failed == length_only and non_2xx == 0
    rows = [
        Row(
            "time_taken",
            "time taken for 1000 requests",
            _number(r"Time taken for tests:\s+([\d.]+)", text),
            "s",
        ),
        Row("rps", "requests per second", _number(r"Requests per second:\s+([\d.]+)", text), "req/s"),
        Row("p50", "p50", _number(r"(?m)^\s+50%\s+(\d+)", text), "ms"),
        Row("p99", "p99", _number(r"(?m)^\s+99%\s+(\d+)", text), "ms"),
        Row("all_2xx", "all 1000 answered 2xx", 1.0 if ok else 0.0, "", "all 2xx", ok),
        Row(
            "length_differs",
            "answers ab calls failed (Length): duplicate=true is 1 byte shorter",
            length_only,
        ),
    ]
    return Outcome(rows, {"command": " ".join([*argv, "<ingest>/events"]), "ab_output": text})
