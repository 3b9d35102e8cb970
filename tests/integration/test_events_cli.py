"""`medevents events` against a running ingest: awkward ids, filters, the token, and its errors."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import msgspec

from medevents.config import MongoSettings, NatsSettings
from medevents.timeline import patient_path

from .conftest import RunningIngest, running_ingest
from .processor_support import running_processor

MEDEVENTS = str(Path(sys.executable).parent / "medevents")
TOKEN = "cli-reader-token"  # noqa: S105 - a test token


async def medevents_events(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [MEDEVENTS, "events", *args],
        env={**os.environ, "MEDEVENTS_URL": "", "MEDEVENTS_TOKEN": "", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


async def post(ingest: RunningIngest, patient: str, n: int, kind: str = "vitals") -> str:
    body = {"patientId": patient, "type": kind, "data": {"n": n}, "ts": f"2025-10-01T10:0{n}:00Z"}
    response = await ingest.client.post(
        "/events",
        content=msgspec.json.encode(body),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
    )
    assert response.status_code == 202, response.text
    event_id: str = response.json()["eventId"]
    return event_id


async def test_the_command_reads_through_the_api(
    nats_settings: NatsSettings, mongo_settings: MongoSettings, tmp_path: Path
) -> None:
    patients = ["a/b", "..", "Zoë \u00e9 2.16.840.1"]
    async with running_ingest(nats_settings, mongo_settings, auth_tokens=TOKEN) as ingest:
        ids = {
            p: [await post(ingest, p, n, "labs" if n == 1 else "vitals") for n in range(3)] for p in patients
        }
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with running_processor(nats_settings, mongo_settings):
            for patient in patients:
                for _ in range(600):
                    got = (await ingest.client.get(patient_path(patient), headers=auth)).json()
                    if got["stored"] == 3 and got["pending"] == 0:
                        break
                    await asyncio.sleep(0.1)

        for patient in patients:
            done = await medevents_events(patient, "--url", ingest.url, MEDEVENTS_TOKEN=TOKEN)
            assert done.returncode == 0, done.stderr
            lines = done.stdout.splitlines()
            assert [line.split()[4] for line in lines[:3]] == ids[patient]
            assert lines[3] == "3 events (0 failed); 0 waiting in the stream"
        # The URL from endpoints.json, the token as an option, a filter, JSON lines.
        (tmp_path / "endpoints.json").write_text(json.dumps({"ingest": ingest.url}))
        labs = await medevents_events(
            "a/b", "--data-dir", str(tmp_path), "--token", TOKEN, "--type", "labs", "--json"
        )
        assert labs.returncode == 0, labs.stderr
        assert [json.loads(line)["eventId"] for line in labs.stdout.splitlines()] == [ids["a/b"][1]]

        refused = await medevents_events("a/b", "--url", ingest.url)
        assert refused.returncode == 1 and "401" in refused.stderr and "Traceback" not in refused.stderr
        invalid = await medevents_events(
            "a/b", "--url", ingest.url, "--since", "yesterday", MEDEVENTS_TOKEN=TOKEN
        )
        assert invalid.returncode == 1 and "since" in invalid.stderr
    gone = await medevents_events("a/b", "--url", ingest.url)
    assert gone.returncode == 1 and "cannot reach" in gone.stderr
    nowhere = await medevents_events("a/b", "--data-dir", str(tmp_path / "empty"))
    assert nowhere.returncode == 2 and "--url" in nowhere.stderr
    wrong = await medevents_events("a/b", "--url", "file:///etc/passwd")
    assert wrong.returncode == 1 and "http" in wrong.stderr
