"""Connecting to NATS (auth, TLS, reconnect forever) and making sure the topology exists."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import nats
import nats.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext, api
from nats.js.errors import BadRequestError, NotFoundError, ServiceUnavailableError

from medevents import topology
from medevents.config import NatsSettings, StreamSettings

__all__ = [
    "NO_LEADER_ERRORS",
    "NO_SUITABLE_PEERS",
    "JetStreamUnavailable",
    "NatsUnavailable",
    "connect",
    "ensure_stream",
    "stream_mismatches",
    "until_led",
]

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
    """Connect once (fail fast at start-up: :class:`NatsUnavailable` after trying each server
    twice), then reconnect forever in the background."""
    client: list[NATS] = []
    errors: list[BaseException] = []
    window: list[asyncio.Timeout] = []

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
        errors.append(exc)
        log.warning("nats error: %s", type(exc).__name__)
        if isinstance(exc, ssl.SSLError) and window and not client[0].is_connected:
            # A refused certificate will not change on retry, and nats-py hangs after a failed
            # TLS upgrade (it waits for the old plain socket to close): give up now.
            window[0].reschedule(asyncio.get_running_loop().time())

    options: dict[str, Any] = {
        "servers": settings.servers,
        "name": name,
        "connect_timeout": settings.connect_timeout_s,
        "reconnect_time_wait": 0.5,
        # The first connection fails fast whatever allow_reconnect says: nats-py retries it as
        # often as later ones, so -1 would wait forever on a wrong password or an absent server.
        # nats-py treats 0 as "no limit" when picking a server, hence 1 (each server is tried
        # twice, reconnect_time_wait apart, then NoServersError). Unbounded once connected.
        "max_reconnect_attempts": 1,
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
    nc = NATS()
    client.append(nc)
    # Each server twice, each attempt bounded by the connect timeout, plus the waits between.
    bound = len(settings.servers) * 2 * (settings.connect_timeout_s + 1.0) + 1.0
    try:
        async with asyncio.timeout(bound) as cm:
            window.append(cm)
            await nc.connect(**options)
    except (OSError, TimeoutError, nats.errors.Error) as exc:
        # nats-py leaves the socket open after a refused first connection; closing can hang on
        # the same half-upgraded socket, hence the bound.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await nc.close()
        reason = _reason([*errors, exc])
        where = ", ".join(_host_port(url) for url in settings.servers)
        log.warning("cannot connect to NATS", extra={"servers": where, "reason": reason})
        raise NatsUnavailable(f"cannot connect to NATS at {where}: {reason}") from None
    nc.options["max_reconnect_attempts"] = -1 if allow_reconnect else 1
    return nc


class NatsUnavailable(ConnectionError):
    """No NATS server took the first connection; the message says why, never with a secret."""


def _host_port(url: str) -> str:
    """A server URL without any user:password in it."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


def _reason(errors: list[BaseException]) -> str:
    """Why a connection failed, in words safe to log (server error texts can quote subjects, which
    hold patient tokens, so only the ones recognised here are named). A refused login is often
    followed by a broken pipe: the most telling error wins."""
    for exc in errors:
        if isinstance(exc, nats.errors.Error) and "authorization violation" in str(exc).lower():
            return (
                "authorization violation (check NATS_USER/NATS_PASSWORD, NATS_TOKEN, "
                "NATS_NKEY_SEED_FILE or NATS_CREDS_FILE)"
            )
    for exc in errors:
        if isinstance(exc, ssl.SSLError):
            hint = "check NATS_TLS_CA_FILE and the client certificate"
            return f"TLS failed: {exc.reason or type(exc).__name__} ({hint})"
    # NoServersError only says that every attempt failed; the attempt's own error says why.
    last = next((e for e in reversed(errors) if not isinstance(e, nats.errors.NoServersError)), errors[-1])
    if isinstance(last, ConnectionRefusedError):
        return "connection refused"
    if isinstance(last, TimeoutError):
        return "timed out"
    return type(last).__name__


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
    (its partition count above all), and changing it live is the operator's decision. On a
    cluster, waits until each stream has a leader (see :func:`until_led`).
    """
    for want in (topology.stream_config(settings), topology.dlq_stream_config(settings)):
        name = want.name
        assert name is not None

        async def get_or_create(want: api.StreamConfig = want, name: str = name) -> api.StreamInfo:
            try:
                return await js.stream_info(name)
            except NotFoundError:
                info = await js.add_stream(want)
                log.info("stream created", extra={"stream": name})
                return info

        info = await until_led(f"stream {name}", get_or_create)
        for mismatch in stream_mismatches(want, info.config):
            log.warning("stream differs from configuration", extra={"stream": name, "diff": mismatch})
    return await until_led(f"stream {topology.STREAM}", lambda: js.stream_info(topology.STREAM))


class JetStreamUnavailable(ConnectionError):
    """A stream, consumer or bucket got no leader within the start-up budget."""


# No leader answered: none elected yet (JetStream answers 503 "cluster not available") or none
# answered in time.
NO_LEADER_ERRORS = (TimeoutError, nats.errors.NoRespondersError, ServiceUnavailableError)
STARTUP_BUDGET_S = 120.0  # how long start-up waits for a JetStream leader before giving up
NO_SUITABLE_PEERS = 10005  # creating a replicated asset before the cluster's nodes all know each other
_T = TypeVar("_T")


async def until_led(
    what: str, request: Callable[[], Awaitable[_T]], *, budget_s: float = STARTUP_BUDGET_S
) -> _T:
    """``request`` (idempotent JetStream API calls on one asset) retried until a leader answers.

    On a cluster, a stream, consumer or KV bucket has no leader for a moment after it is created
    (by this process or another one starting at the same time) and during an election: its info
    requests go unanswered, JetStream answers 503, or a follower answers without a leader. Start-up
    waits for it with short tries (one log line), and raises :class:`JetStreamUnavailable` after
    ``budget_s``. Creating a replicated asset on a cluster that has just started can also be
    refused for want of peers (10005) for a moment: retried the same way. Other errors (not found,
    bad request) propagate at once.
    """
    deadline = time.monotonic() + budget_s
    tries = 0
    while True:
        try:
            async with asyncio.timeout(min(2.0, 1.0 * 2**tries)):
                result = await request()
            cluster = getattr(result, "cluster", None)
            if cluster is None or cluster.leader:
                if tries:
                    log.info("JetStream leader found", extra={"asset": what, "tries": tries + 1})
                return result
            reason = "no leader yet"
        except NO_LEADER_ERRORS as exc:
            reason = type(exc).__name__
        except BadRequestError as exc:
            if exc.err_code != NO_SUITABLE_PEERS:
                raise
            reason = "no suitable peers yet"  # a fresh cluster whose nodes are still meeting
        if time.monotonic() > deadline:
            raise JetStreamUnavailable(
                f"{what} has no leader after {budget_s:g} s ({reason}): is a majority of the NATS cluster up?"
            )
        if tries == 0:
            log.warning("waiting for a JetStream leader", extra={"asset": what, "reason": reason})
        tries += 1
        await asyncio.sleep(min(1.0, 0.1 * 2**tries))
