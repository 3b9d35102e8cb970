"""`medevents up` as a user runs it: starts, writes endpoints.json, keeps events across restarts,
stops every child on SIGTERM, takes them down when it is SIGKILLed, and restarts a killed ingest
without ever answering 202 for an event that is not in the stream."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx
import msgspec
import nats
import pytest
from nats.js.errors import NotFoundError
from pymongo import AsyncMongoClient

from .localup import MEDEVENTS, LocalUp, descendants, wait_gone

JSON = {"Content-Type": "application/json"}


def event(i: int, event_id: str | None = None) -> bytes:
    body = {"patientId": f"p-{i % 5}", "type": "vitals", "data": {"i": i}, "ts": "2025-10-01T10:30:00Z"}
    if event_id:
        body["eventId"] = event_id
    return msgspec.json.encode(body)


async def stream_ids(nats_url: str) -> list[str]:
    """Ids of the events still in the stream, in order (the processors remove what they stored)."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        info = await js.stream_info("EVENTS")
        ids = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                msg = await js.get_msg("EVENTS", seq)
            except NotFoundError:  # processed and acknowledged: work-queue retention removed it
                continue
            ids.append((msg.headers or {})["Nats-Msg-Id"])
        return ids
    finally:
        await nc.close()


async def processed_ids(mongo_uri: str) -> list[str]:
    """Ids of the events the processors stored."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri)
    try:
        return [
            d["eventId"] async for d in client["medical_events"]["processed_events"].find({}, {"eventId": 1})
        ]
    finally:
        await client.close()


async def kept_ids(endpoints: dict[str, str]) -> list[str]:
    """Every event the system holds: still queued in the stream, or processed into MongoDB."""
    return await processed_ids(endpoints["mongo"]) + await stream_ids(endpoints["nats"])


async def test_up_restarts_with_data_and_stops_its_children(tmp_path: Path) -> None:
    up = LocalUp(tmp_path / "data", env={"PROCESSOR_DELAY_MIN_MS": "0", "PROCESSOR_DELAY_MAX_MS": "50"})
    try:
        endpoints = up.start()
        assert {"ingest", "nats", "mongo"} <= endpoints.keys()
        assert endpoints["ingest"] == up.url
        async with httpx.AsyncClient(base_url=up.url) as client:
            health = await client.get("/health")
            assert health.json() == {"status": "ok", "service": "ingest-service"}
            assert (await client.get("/readyz")).status_code == 200
            accepted = []
            for i in range(20):
                response = await client.post("/events", content=event(i), headers=JSON)
                assert response.status_code == 202
                accepted.append(response.json()["eventId"])

        children = descendants(up.pid)
        assert len(children) >= 3, "nats-server, the Mongo-wire server and the ingest"
        up.signal(signal.SIGTERM)
        assert up.wait(60) == 0
        assert wait_gone(children, 10) == set(), "SIGTERM left children running"

        endpoints = up.start()  # same data directory
        kept = await kept_ids(endpoints)
        assert sorted(kept) == sorted(accepted), "events survive a restart (queued or processed), once each"
        queued = await stream_ids(endpoints["nats"])
        assert queued == [i for i in accepted if i in queued], "the queued ones in order"
        async with httpx.AsyncClient(base_url=up.url) as client:
            again = await client.post("/events", content=event(3), headers=JSON)
        # JetStream remembers the id only while the event is in the stream (a restarted server
        # rebuilds its duplicate table from stored messages); once processed, MongoDB's unique
        # eventId keeps it stored once.
        assert again.status_code == 202 and again.json()["eventId"] == accepted[3]
        async with asyncio.timeout(60):
            while sorted(processed := await processed_ids(endpoints["mongo"])) != sorted(accepted):
                assert len(processed) == len(set(processed)), "an event was stored twice"
                await asyncio.sleep(0.2)

        children = descendants(up.pid)
        up.signal(signal.SIGKILL)
        up.wait(10)
        assert wait_gone(children, 15) == set(), "children outlived a SIGKILLed runner"
    finally:
        up.stop()


async def kill_ingest_under_load(up: LocalUp, kills: int) -> None:
    """16 clients post without pause; the ingest is SIGKILLed ``kills`` times, each time after the
    runner's new one has accepted 100 more events. Every 202 must name an event in the stream."""
    endpoints = up.start()
    acknowledged: set[str] = set()
    failures = 0
    stop = asyncio.Event()
    counter = iter(range(10_000_000))

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal failures
        while not stop.is_set():
            event_id = f"kill-test-{next(counter)}"
            try:
                response = await client.post("/events", content=event(0, event_id), headers=JSON)
            except httpx.TransportError:
                failures += 1
                await asyncio.sleep(0.05)
                continue
            if response.status_code == 202:
                assert response.json()["eventId"] == event_id
                acknowledged.add(event_id)
            else:
                assert response.status_code == 503, response.text

    async def accepted_more(n: int) -> None:
        target = len(acknowledged) + n
        while len(acknowledged) < target:
            await asyncio.sleep(0.01)

    async with httpx.AsyncClient(base_url=up.url, timeout=10) as client:
        loops = [asyncio.create_task(client_loop(client)) for _ in range(16)]
        try:
            await accepted_more(200)
            for _ in range(kills):
                pid = up.child_pid("medevents ingest")
                os.kill(pid, signal.SIGKILL)
                async with asyncio.timeout(90):
                    while (new_pid := await asyncio.to_thread(up.ingest_pid_or_none)) in (None, pid):
                        await asyncio.sleep(0.1)  # the runner restarts it after a back-off
                    await accepted_more(100)  # and the new one accepts again
                assert new_pid != pid
        finally:
            stop.set()
            await asyncio.gather(*loops)
    assert failures > 0, "the kills happened while requests were in flight"
    stored = set(await kept_ids(endpoints))
    assert acknowledged <= stored, f"202 without the event in the stream: {sorted(acknowledged - stored)[:5]}"


async def test_ingest_killed_mid_request_never_acknowledges_a_lost_event(tmp_path: Path) -> None:
    up = LocalUp(tmp_path / "data")
    try:
        await kill_ingest_under_load(up, kills=1)
    finally:
        up.stop()


@pytest.mark.soak
async def test_ingest_killed_again_and_again(tmp_path: Path) -> None:
    """Soak (`make soak`): ten kills in a row; the runner's back-off grows, no 202 is ever lost."""
    up = LocalUp(tmp_path / "data")
    try:
        await kill_ingest_under_load(up, kills=10)
    finally:
        up.stop()


def test_endpoints_file_is_valid_json_with_urls(tmp_path: Path) -> None:
    up = LocalUp(tmp_path / "data")
    try:
        up.start()
        endpoints = json.loads((tmp_path / "data" / "endpoints.json").read_text())
        assert endpoints["nats"].startswith("nats://127.0.0.1:")
        assert endpoints["mongo"].startswith("mongodb://127.0.0.1:")
        assert oct((tmp_path / "data" / "patient-hash.key").stat().st_mode & 0o777) == "0o600"
    finally:
        up.stop()


def _status(data_dir: Path) -> dict[str, Any]:
    done = subprocess.run(
        [MEDEVENTS, "status", "--json", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "NATS_URL"},
    )
    loaded: dict[str, Any] = json.loads(done.stdout)
    return loaded


async def _new_pid(up: LocalUp, argv_part: str, old: int, timeout: float = 90) -> int:
    async with asyncio.timeout(timeout):
        while True:
            try:
                pid = up.child_pid(argv_part)
            except AssertionError:
                pid = old
            if pid != old:
                return pid
            await asyncio.sleep(0.2)


async def test_killed_embedded_servers_come_back_on_the_same_port_and_data(tmp_path: Path) -> None:
    """SIGKILL the embedded nats-server, then the Mongo-wire server: the runner starts each again
    on its port and data directory (back-off as for ingest and processors), the system answers
    and processes again, events queued before the kill are kept, and `medevents status` shows
    the restarts."""
    data = tmp_path / "data"
    up = LocalUp(data, env={"PROCESSOR_DELAY_MIN_MS": "0", "PROCESSOR_DELAY_MAX_MS": "10"})
    try:
        endpoints = up.start()
        async with httpx.AsyncClient(base_url=up.url, timeout=10) as client:

            async def post_until_accepted(i: int) -> str:
                async with asyncio.timeout(90):
                    while True:
                        with contextlib.suppress(httpx.TransportError):
                            response = await client.post("/events", content=event(i), headers=JSON)
                            if response.status_code == 202:
                                event_id: str = response.json()["eventId"]
                                return event_id
                            assert response.status_code == 503, response.text
                        await asyncio.sleep(0.2)

            before = await post_until_accepted(1)
            for argv_part in ("nats-server", "secantusd"):
                old = up.child_pid(argv_part)
                os.kill(old, signal.SIGKILL)
                await _new_pid(up, argv_part, old)
                accepted = await post_until_accepted(2 if argv_part == "nats-server" else 3)
                async with asyncio.timeout(90):  # processed: NATS and the store both work again
                    while (await client.get(f"/events/{accepted}")).status_code != 200:
                        await asyncio.sleep(0.3)
            assert (await client.get(f"/events/{before}")).status_code == 200

        assert json.loads((data / "endpoints.json").read_text())["nats"] == endpoints["nats"]
        status = await asyncio.to_thread(_status, data)
        children = {c["name"]: c for c in status["local"]["children"]}
        for name, url in (("nats-server", endpoints["nats"]), ("secantusdb", endpoints["mongo"])):
            child = children[name]
            assert child["running"] and child["restarts"] == 1, child
            assert child["lastExit"] == -signal.SIGKILL
            assert f":{child['port']}" in url, "restarted on the same port"
        assert status["local"]["runnerAlive"] is True
        assert children["ingest"]["running"]
    finally:
        up.stop()
