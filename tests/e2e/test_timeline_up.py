"""The old demo's ordering example (two events of patient-456) read back from a fresh
`medevents up`, with its default 5-6 s handler: through the API, through `medevents events`
(text and JSON), and followed live with `--follow` until Ctrl-C."""

from __future__ import annotations

import datetime as dt
import json
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import IO, Any

import httpx

from .localup import MEDEVENTS, LocalUp

JSON = {"Content-Type": "application/json"}
# The old demo's README, "Test Per-Patient Ordering", as it is.
OLD_DEMO = [
    {"patientId": "patient-456", "type": "vitals", "data": {"sequence": 1}, "ts": "2025-10-01T10:00:00Z"},
    {"patientId": "patient-456", "type": "vitals", "data": {"sequence": 2}, "ts": "2025-10-01T10:05:00Z"},
]


def wait_summary(client: httpx.Client, stored: int, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        summary: dict[str, Any] = client.get("/patients/patient-456").json()
        if summary["stored"] >= stored and summary["pending"] == 0:
            return summary
        assert time.monotonic() < deadline, summary
        time.sleep(0.5)


def lines_of(stream: IO[str]) -> tuple[queue.Queue[str], threading.Thread]:
    """The lines a process writes, as they come (read by a thread, so reads can time out); the
    thread ends at the end of the output."""
    found: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in stream:
            found.put(line.rstrip("\n"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return found, reader


def test_the_old_demo_ordering_example_reads_back_in_order(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    up = LocalUp(data_dir)  # default handler: a random 5-6 s per event, as the old demo
    try:
        up.start()
        with httpx.Client(base_url=up.url, timeout=30) as client:
            ids = [client.post("/events", json=body).json()["eventId"] for body in OLD_DEMO]
            # The second event waits for the first (5-6 s): something is pending right now.
            assert client.get("/patients/patient-456").json()["pending"] >= 1
            summary = wait_summary(client, 2)
            events = client.get("/patients/patient-456/events").json()["events"]
        assert [e["eventId"] for e in events] == ids
        assert [e["data"] for e in events] == [{"sequence": 1}, {"sequence": 2}]
        assert [e["status"] for e in events] == ["processed", "processed"]
        first_done = dt.datetime.fromisoformat(events[0]["processedAt"])
        assert dt.datetime.fromisoformat(events[1]["startedAt"]) >= first_done  # the second waited
        assert (summary["stored"], summary["failed"], summary["lastEventId"]) == (2, 0, ids[1])

        command = [MEDEVENTS, "events", "patient-456", "--data-dir", str(data_dir)]
        text = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout
        lines = text.splitlines()
        assert [line.split()[4] for line in lines[:2]] == ids, text
        assert '{"sequence":1}' in lines[0] and '{"sequence":2}' in lines[1]
        assert lines[2] == "2 events (0 failed); 0 waiting in the stream"
        as_json = subprocess.run([*command, "--json"], capture_output=True, text=True, timeout=60, check=True)
        assert [json.loads(line) for line in as_json.stdout.splitlines()] == events

        with subprocess.Popen(
            [*command, "--follow", "--interval", "0.5"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as follow:
            assert follow.stdout is not None and follow.stderr is not None
            printed, reader = lines_of(follow.stdout)
            try:
                assert [printed.get(timeout=30).split()[4] for _ in ids] == ids
                third = {**OLD_DEMO[1], "data": {"sequence": 3}, "ts": "2025-10-01T10:10:00Z"}
                third_id = httpx.post(up.url + "/events", json=third, timeout=30).json()["eventId"]
                line = printed.get(timeout=60)  # processed after 5-6 s, printed at the next poll
                assert line.split()[4] == third_id and '{"sequence":3}' in line
                follow.send_signal(signal.SIGINT)
                assert follow.wait(30) == 130
                assert "Traceback" not in follow.stderr.read()
            finally:
                if follow.poll() is None:
                    follow.kill()
                    follow.wait()
                reader.join(10)
    finally:
        up.stop()
