"""``medevents ingest``: the ingest service under uvicorn (uvloop + httptools)."""

from __future__ import annotations

import math

import uvicorn

from medevents import logs
from medevents.config import (
    IngestSettings,
    LogSettings,
    MongoSettings,
    NatsSettings,
    StreamSettings,
    TracingSettings,
    load,
)

__all__ = ["serve"]


def serve() -> None:
    settings = load(IngestSettings)
    # Fail on bad configuration here, in the parent, with the variable's name, not in each worker.
    for cls in (LogSettings, NatsSettings, StreamSettings, MongoSettings, TracingSettings):
        load(cls)
    settings.tokens()
    logs.configure(load(LogSettings), "ingest")
    uvicorn.run(
        "medevents.ingest.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="uvloop",
        http="httptools",
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=max(math.ceil(settings.publish_timeout_s * 2), 10),
    )
