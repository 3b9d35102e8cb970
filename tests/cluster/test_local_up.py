"""`medevents up --nats-nodes 3`: the production topology (3 nats-servers, stream EVENTS with 3
replicas) on one machine, as a user starts it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path

import httpx
import nats
from e2e.localup import MEDEVENTS, LocalUp

from medevents import topology
from medevents.local import EmbeddedNatsCluster


async def test_up_with_three_nats_nodes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    up = LocalUp(
        data,
        env={"PROCESSOR_DELAY_MIN_MS": "0", "PROCESSOR_DELAY_MAX_MS": "5", "MEDEVENTS_PARTITIONS": "4"},
        args=["--nats-nodes", "3"],
    )
    endpoints = await asyncio.to_thread(up.start, 120.0)
    try:
        urls = endpoints["nats"].split(",")
        assert len(urls) == 3
        nc = await nats.connect(urls)
        try:
            info = await nc.jetstream().stream_info(topology.STREAM)
        finally:
            await nc.close()
        assert info.config.num_replicas == 3
        assert info.cluster is not None and info.cluster.leader
        assert len(info.cluster.replicas or []) == 2
        event = {
            "eventId": "up-3-nodes",
            "patientId": "p-1",
            "type": "vitals",
            "data": {},
            "ts": "2025-10-01T10:30:00Z",
        }
        async with httpx.AsyncClient(base_url=up.url, timeout=10) as client:
            assert (await client.post("/events", json=event)).status_code == 202
            deadline = time.monotonic() + 60
            while (await client.get("/events/up-3-nodes")).status_code != 200:
                assert time.monotonic() < deadline, "the event was not processed"
                await asyncio.sleep(0.3)
        status = await asyncio.to_thread(
            subprocess.run,
            [MEDEVENTS, "status", "--json", "--data-dir", str(data)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["complete"] is True
    finally:
        await asyncio.to_thread(up.stop)


async def test_every_cluster_node_fsyncs_before_it_acknowledges(nats_cluster: EmbeddedNatsCluster) -> None:
    """The cluster's nodes run from the same generated configuration as the single embedded
    server: `jetstream { sync_interval: always }` (FINDINGS, durability under power loss)."""
    async with httpx.AsyncClient(timeout=5) as client:
        for node in nats_cluster.nodes:
            varz = (await client.get(f"{node.monitor_url}/varz")).json()
            assert varz["jetstream"]["config"]["sync_always"] is True, node.server_name
            assert varz["cluster"]["name"] == "medevents"
