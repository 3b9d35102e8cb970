"""Ingest checks that the NATS it publishes to fsyncs before it acknowledges (NATS_MONITOR_URL).

Real nats-servers, one with ``jetstream { sync_interval: always }`` and one with the server's
default (fsync every two minutes, the configuration that lost 399 of 400 accepted events in a
simulated power failure, FINDINGS.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

from medevents.config import MongoSettings, NatsSettings
from medevents.local import free_port
from medevents.natsmonitor import SyncState, check

from .conftest import start_ingest


async def test_check_tells_a_lazy_server_from_a_fsyncing_one(
    monitored_nats: Callable[[bool], Any],
) -> None:
    safe, lazy = monitored_nats(True), monitored_nats(False)
    assert (await check([safe.monitor_url])).state is SyncState.ALWAYS
    assert (await check([lazy.monitor_url])).state is SyncState.UNSAFE
    both = await check([safe.monitor_url, lazy.monitor_url])
    assert both.state is SyncState.UNSAFE
    unreachable = await check([safe.monitor_url, f"http://127.0.0.1:{free_port()}"])
    assert unreachable.state is SyncState.UNKNOWN


def _gauge(metrics: str) -> float:
    line = next(x for x in metrics.splitlines() if x.startswith("medevents_nats_sync_always "))
    return float(line.split()[1])


@pytest.mark.parametrize(("sync_always", "gauge"), [(True, 1.0), (False, 0.0)])
async def test_ingest_reports_whether_acknowledged_events_are_fsynced(
    monitored_nats: Callable[[bool], Any],
    mongo_settings: MongoSettings,
    caplog: pytest.LogCaptureFixture,
    sync_always: bool,
    gauge: float,
) -> None:
    server = monitored_nats(sync_always)
    settings = NatsSettings(url=server.url, monitor_url=server.monitor_url)
    caplog.set_level(logging.INFO, logger="medevents.nats")
    running, uvicorn_server, task = await start_ingest(settings, mongo_settings)
    try:
        assert _gauge((await running.client.get("/metrics")).text) == gauge
        ready = await running.client.get("/readyz")
        assert ready.status_code == 200  # it works; it is not durable against power loss
        warnings = ready.json().get("warnings", [])
        records = [r for r in caplog.records if r.name == "medevents.nats" and "fsync" in r.getMessage()]
        assert len(records) == 1
        if sync_always:
            assert warnings == []
            assert records[0].levelno == logging.INFO
        else:
            assert len(warnings) == 1 and "sync_interval: always" in warnings[0]
            assert records[0].levelno == logging.WARNING
        accepted = await running.client.post(
            "/events", json={"patientId": "p", "type": "t", "data": {}, "ts": "2025-10-01T10:00:00Z"}
        )
        assert accepted.status_code == 202
    finally:
        await running.client.aclose()
        uvicorn_server.should_exit = True
        await task


async def test_without_a_monitor_url_the_check_is_unknown(
    nats_settings: NatsSettings, mongo_settings: MongoSettings
) -> None:
    running, uvicorn_server, task = await start_ingest(nats_settings, mongo_settings)
    try:
        assert _gauge((await running.client.get("/metrics")).text) == -1.0
        assert (await running.client.get("/readyz")).json() == {"status": "ready"}
    finally:
        await running.client.aclose()
        uvicorn_server.should_exit = True
        await task
