"""The ingest service running for real (uvicorn on a free port) against real servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import nats
import pytest
import uvicorn
from nats.js import JetStreamContext

from medevents import topology
from medevents.config import IngestSettings, MongoSettings, NatsSettings, StreamSettings
from medevents.ingest import IngestService
from medevents.local import free_port


@dataclass
class RunningIngest:
    service: IngestService
    client: httpx.AsyncClient
    url: str


async def start_ingest(
    nats_settings: NatsSettings,
    mongo_settings: MongoSettings,
    settings: IngestSettings | None = None,
    stream: StreamSettings | None = None,
) -> tuple[RunningIngest, uvicorn.Server, asyncio.Task[None]]:
    port = free_port()
    service = IngestService(
        settings or IngestSettings(port=port),
        nats_settings,
        stream or StreamSettings(partitions=4),
        mongo_settings,
    )
    config = uvicorn.Config(service.app(), host="127.0.0.1", port=port, log_config=None, lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    url = f"http://127.0.0.1:{port}"
    client = httpx.AsyncClient(base_url=url, timeout=30)
    return RunningIngest(service, client, url), server, task


@asynccontextmanager
async def running_ingest(
    nats_settings: NatsSettings, mongo_settings: MongoSettings, **settings: Any
) -> AsyncIterator[RunningIngest]:
    """An ingest service with these ``IngestSettings`` fields, stopped on leaving."""
    running, server, task = await start_ingest(
        nats_settings, mongo_settings, IngestSettings(port=free_port(), **settings)
    )
    try:
        yield running
    finally:
        await running.client.aclose()
        server.should_exit = True
        await task


@pytest.fixture
async def ingest(nats_settings: NatsSettings, mongo_settings: MongoSettings) -> AsyncIterator[RunningIngest]:
    async with running_ingest(nats_settings, mongo_settings) as running:
        yield running


@pytest.fixture
async def js(nats_settings: NatsSettings) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(nats_settings.url)
    yield nc.jetstream()
    await nc.close()


async def stream_messages(js: JetStreamContext) -> list[tuple[int, str, bytes, dict[str, str]]]:
    """Every message of stream EVENTS: (sequence, stored subject, payload, headers)."""
    info = await js.stream_info(topology.STREAM)
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(topology.STREAM, seq)
        out.append((seq, msg.subject or "", msg.data or b"", dict(msg.headers or {})))
    return out
