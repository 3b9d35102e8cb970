"""`medevents up` with its autoscaler, as a user runs it: a burst adds processor processes, they
drain it, they go away after it, and every event is stored once and in order per patient."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pymongo import AsyncMongoClient

from medevents.local import free_port

MEDEVENTS = str(Path(sys.executable).parent / "medevents")
EVENTS, PATIENTS = 300, 30


def _get(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - a local test URL
            return bool(response.status == 200)
    except OSError:
        return False


def _post(url: str, body: Any) -> int:
    request = urllib.request.Request(  # noqa: S310 - a local test URL
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        return int(response.status)


def _read(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


async def eventually(check: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await asyncio.to_thread(check):
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_burst_adds_processors_that_drain_it_and_go(mongo_uri: str, tmp_path: Path) -> None:
    database = f"t_{uuid.uuid4().hex[:12]}"
    parts = urlsplit(mongo_uri)
    uri = urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, ""))
    port = free_port()
    data = tmp_path / "data"
    env = {
        **os.environ,
        "PORT": str(port),
        "MONGO_URI": uri,
        "MEDEVENTS_PARTITIONS": "4",
        "PROCESSOR_CONCURRENCY": "5",  # 5 in flight x 0.2 s = 25 events/s per processor
        "PROCESSOR_DELAY_MIN_MS": "200",
        "PROCESSOR_DELAY_MAX_MS": "200",
        "MEDEVENTS_AUTOSCALE_MIN_PROCESSORS": "1",
        "MEDEVENTS_AUTOSCALE_MAX_PROCESSORS": "3",
        "MEDEVENTS_AUTOSCALE_TARGET_DRAIN_S": "5",
        "MEDEVENTS_AUTOSCALE_POLL_S": "0.5",
        "MEDEVENTS_AUTOSCALE_SCALE_DOWN_WINDOW_S": "3",
    }
    log = (tmp_path / "up.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        MEDEVENTS, "up", "--data-dir", str(data), "--processors", "1", env=env, stdout=log, stderr=log
    )
    autoscaler = data / "autoscaler.json"
    try:
        await eventually(lambda: _get(f"http://127.0.0.1:{port}/health"), 90, "ingest")
        await eventually(lambda: _read(autoscaler).get("current") == 1, 60, "one processor, autoscaler on")
        burst = [
            {
                "patientId": f"patient-{i % PATIENTS}",
                "type": "vitals",
                "data": {"sequence": i},
                "ts": "2025-10-01T10:00:00Z",
                "eventId": f"burst-{i}",
            }
            for i in range(EVENTS)
        ]
        assert await asyncio.to_thread(_post, f"http://127.0.0.1:{port}/events/batch", burst) == 202

        await eventually(lambda: _read(autoscaler).get("current", 0) >= 2, 30, "processors added")
        peak = _read(autoscaler)
        assert peak["decision"]["reason"] == "ScaleUp" and peak["decision"]["fromReplicas"] == 1

        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
        try:
            collection = client[database]["processed_events"]
            deadline = time.monotonic() + 120
            while await collection.count_documents({}) < EVENTS and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
            docs = await collection.find({}).to_list()
        finally:
            await client.close()

        await eventually(
            lambda: (
                _read(autoscaler).get("current") == 1
                and _read(autoscaler)["decision"]["reason"] == "ScaleDown"
            ),
            60,
            "processors gone after the burst",
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 90)
        log.close()
    assert code == 0, (tmp_path / "up.log").read_text()[-3000:]

    assert sorted(d["eventId"] for d in docs) == sorted(f"burst-{i}" for i in range(EVENTS))  # each once
    by_patient: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for d in docs:
        by_patient[d["patientId"]].append(d)
    for patient, stored in by_patient.items():
        stored.sort(key=lambda d: d["processedAt"])
        sequences = [d["data"]["sequence"] for d in stored]
        assert sequences == sorted(sequences), patient  # applied in arrival order
