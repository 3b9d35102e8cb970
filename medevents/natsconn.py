"""Connecting to NATS (auth, TLS, reconnect forever) and making sure the topology exists."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError

from medevents import topology
from medevents.config import NatsSettings, StreamSettings

__all__ = ["connect", "ensure_stream", "stream_mismatches"]

log = logging.getLogger("medevents.nats")


def _tls_context(settings: NatsSettings) -> ssl.SSLContext | None:
    if not (
        settings.tls_ca_file or settings.tls_cert_file or any(u.startswith("tls") for u in settings.servers)
    ):
        return None
    context = ssl.create_default_context(cafile=settings.tls_ca_file or None)
    if settings.tls_cert_file:
        context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    return context


async def connect(
    settings: NatsSettings,
    name: str,
    *,
    on_state: Callable[[str], Awaitable[None]] | None = None,
    allow_reconnect: bool = True,
) -> NATS:
    """Connect once (fail fast at start-up), then reconnect forever in the background."""
    client: list[NATS] = []

    async def disconnected() -> None:
        if client and (client[0].is_closed or client[0].is_draining):
            return  # our own close, not an outage
        log.warning("nats disconnected")
        if on_state:
            await on_state("disconnected")

    async def reconnected() -> None:
        log.info("nats reconnected")
        if on_state:
            await on_state("reconnected")

    async def error(exc: Exception) -> None:
        log.warning("nats error: %s", type(exc).__name__)

    options: dict[str, Any] = {
        "servers": settings.servers,
        "name": name,
        "connect_timeout": settings.connect_timeout_s,
        "reconnect_time_wait": 0.5,
        # nats-py treats 0 as "no limit" when picking a server, so a connect that must fail fast
        # needs 1 (each server is tried twice, reconnect_time_wait apart, then NoServersError).
        "max_reconnect_attempts": -1 if allow_reconnect else 1,
        "allow_reconnect": allow_reconnect,
        "disconnected_cb": disconnected,
        "reconnected_cb": reconnected,
        "error_cb": error,
        "tls": _tls_context(settings),
    }
    if settings.user:
        options |= {"user": settings.user, "password": settings.password}
    if settings.token:
        options["token"] = settings.token
    if settings.creds_file:
        options["user_credentials"] = settings.creds_file
    if settings.nkey_seed_file:
        options["nkeys_seed"] = settings.nkey_seed_file
    client.append(await nats.connect(**options))
    return client[0]


_COMPARED = ("subjects", "retention", "discard", "num_replicas", "duplicate_window", "max_age", "max_bytes")


def stream_mismatches(want: api.StreamConfig, have: api.StreamConfig) -> list[str]:
    """Settings where an existing stream differs from what this process was configured with."""
    out = [
        f"{field}: configured {getattr(want, field)!r}, stream has {getattr(have, field)!r}"
        for field in _COMPARED
        if getattr(want, field) != getattr(have, field)
    ]
    want_p, have_p = topology.partitions_of(want), topology.partitions_of(have)
    if want_p != have_p:
        out.append(f"partitions: configured {want_p}, stream has {have_p}")
    return out


async def ensure_stream(js: JetStreamContext, settings: StreamSettings) -> api.StreamInfo:
    """Create stream `EVENTS` and the dead-letter stream if missing; never change existing ones.

    A difference from the configuration is logged, not applied: the stream is the source of truth
    (its partition count above all), and changing it live is the operator's decision.
    """
    for want in (topology.stream_config(settings), topology.dlq_stream_config(settings)):
        assert want.name is not None
        try:
            info = await js.stream_info(want.name)
        except NotFoundError:
            info = await js.add_stream(want)
            log.info("stream created", extra={"stream": want.name})
            continue
        for mismatch in stream_mismatches(want, info.config):
            log.warning("stream differs from configuration", extra={"stream": want.name, "diff": mismatch})
    return await js.stream_info(topology.STREAM)
