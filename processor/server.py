"""``medevents processor``: one pod's worth of processing plus its health server, with a graceful
drain on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Generator

import uvicorn
import uvloop
from starlette.applications import Starlette

from medevents import logs, tracing
from medevents.config import (
    LogSettings,
    MongoSettings,
    NatsSettings,
    ProcessorSettings,
    StreamSettings,
    TracingSettings,
    load,
)
from medevents.probes import probe_routes

from .service import Processor

__all__ = ["serve"]

log = logging.getLogger("medevents.processor")

SERVICE_NAME = "processor-service"  # what GET /health reports, as in the old demo


class _HealthServer(uvicorn.Server):
    """uvicorn without its own signal handling: the processor drains first, then stops it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def health_app(processor: Processor) -> Starlette:
    return Starlette(routes=probe_routes(SERVICE_NAME, processor.readiness, processor.metrics.registry))


async def run(processor: Processor, host: str, port: int) -> int:
    """Start the processor and its health server; on SIGTERM or SIGINT drain, then stop.
    Returns the exit code: 1 when a task crashed (a bug; the supervisor restarts the process)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await processor.start()
    config = uvicorn.Config(
        health_app(processor), host=host, port=port, log_config=None, access_log=False, lifespan="off"
    )
    server = _HealthServer(config)
    server_task = asyncio.create_task(server.serve(), name="health-server")
    stopping = asyncio.create_task(stop.wait())
    crashing = asyncio.create_task(processor.crashed.wait())
    try:
        await asyncio.wait([stopping, crashing], return_when=asyncio.FIRST_COMPLETED)
        if processor.crashed.is_set():
            log.error("a processor task crashed; stopping")
        else:
            log.info("stop requested; draining")
        await processor.drain()
    finally:
        stopping.cancel()
        crashing.cancel()
        await processor.close()
        server.should_exit = True
        await server_task
    return 1 if processor.crashed.is_set() else 0


def serve() -> int:
    """Run a processor configured by environment variables until SIGTERM; returns the exit code."""
    settings = load(ProcessorSettings)
    nats_settings, stream, mongo = load(NatsSettings), load(StreamSettings), load(MongoSettings)
    tracing_settings = load(TracingSettings)
    logs.configure(load(LogSettings), "processor")
    if tracing.configure(tracing_settings, "medevents-processor"):
        tracing.instrument_pymongo()
    processor = Processor(settings, nats_settings, stream, mongo)
    try:
        return uvloop.run(run(processor, settings.host, settings.port))
    finally:
        tracing.shutdown()
