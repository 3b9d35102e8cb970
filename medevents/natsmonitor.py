"""Does the NATS we use fsync before it acknowledges? Read from the servers' monitoring endpoint.

A JetStream PubAck is our ``202``. nats-server sends it before the message is fsynced unless it
runs with ``jetstream { sync_interval: always }`` (by default it fsyncs every two minutes), so a
power failure can lose acknowledged events (FINDINGS.md, "Durability under power loss"). We set
that option on every NATS we start; an external NATS we can only check: ``/varz`` ->
``jetstream.config.sync_always`` is ``true`` with ``always`` and absent otherwise
(``sync_interval`` reads the same in both cases and tells nothing).

:func:`verdict` is the pure decision over what the servers said; :func:`check` does the reads.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from urllib.parse import urlsplit

import msgspec

__all__ = [
    "ServerSync",
    "SyncState",
    "SyncVerdict",
    "SyncWatch",
    "check",
    "monitor_urls",
    "parse_varz",
    "verdict",
]

log = logging.getLogger("medevents.nats")

UNSAFE_ADVICE = (
    "a power failure of a NATS node can lose events already answered 202; "
    "set `jetstream { sync_interval: always }` on every server (docs/OPERATIONS.md)"
)


class SyncState(enum.Enum):
    ALWAYS = "always"  # every server with JetStream fsyncs before it acknowledges
    UNSAFE = "unsafe"  # at least one server acknowledges before fsync
    UNKNOWN = "unknown"  # not configured, unreachable or unreadable: we cannot tell

    @property
    def gauge(self) -> int:
        """``medevents_nats_sync_always``: 1 always, 0 unsafe, -1 unknown."""
        return {SyncState.ALWAYS: 1, SyncState.UNSAFE: 0, SyncState.UNKNOWN: -1}[self]


class ServerSync(msgspec.Struct, frozen=True):
    """What one monitoring URL said."""

    url: str  # the monitoring URL (never carries credentials: it is logged)
    server: str = ""  # the server's name
    jetstream: bool = False  # JetStream is enabled on this server
    sync_always: bool = False  # it fsyncs before acknowledging
    error: str = ""  # why it could not be read ("" when it was)


class SyncVerdict(msgspec.Struct, frozen=True):
    state: SyncState
    message: str  # one sentence for a log line, a readiness warning or a condition


class _JsConfig(msgspec.Struct):
    sync_always: bool = False


class _Js(msgspec.Struct):
    config: _JsConfig | None = None


class _Varz(msgspec.Struct):
    server_name: str = ""
    jetstream: _Js | None = None


_decode_varz = msgspec.json.Decoder(_Varz).decode


def parse_varz(url: str, body: bytes) -> ServerSync:
    """One server's ``/varz`` answer."""
    try:
        varz = _decode_varz(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return ServerSync(url, error="not a nats-server /varz answer")
    config = varz.jetstream.config if varz.jetstream else None
    if config is None:
        return ServerSync(url, varz.server_name)
    return ServerSync(url, varz.server_name, jetstream=True, sync_always=config.sync_always)


def verdict(servers: Sequence[ServerSync]) -> SyncVerdict:
    """The whole deployment's answer: unsafe as soon as one JetStream server does not fsync
    (an R3 stream's leader may be that one), always only when every URL answered and every
    JetStream server fsyncs."""
    if not servers:
        return SyncVerdict(SyncState.UNKNOWN, "NATS_MONITOR_URL is not set: cannot check fsync-before-ack")
    lazy = [s.server or s.url for s in servers if s.jetstream and not s.sync_always]
    if lazy:
        names = ", ".join(lazy)
        return SyncVerdict(SyncState.UNSAFE, f"NATS acknowledges before fsync on {names}: {UNSAFE_ADVICE}")
    failed = [f"{s.url} ({s.error})" for s in servers if s.error]
    if failed:
        return SyncVerdict(SyncState.UNKNOWN, f"cannot read NATS monitoring at {', '.join(failed)}")
    if not any(s.jetstream for s in servers):
        return SyncVerdict(SyncState.UNKNOWN, "no monitored NATS server has JetStream enabled")
    return SyncVerdict(SyncState.ALWAYS, f"every NATS server fsyncs before it acknowledges ({len(servers)})")


def monitor_urls(setting: str) -> list[str]:
    """``NATS_MONITOR_URL``: comma separated ``http(s)://host:port`` base URLs, one per server."""
    return [u.strip().rstrip("/") for u in setting.split(",") if u.strip()]


def _get(url: str, timeout: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - http(s) checked in config
        return bytes(response.read())


async def _one(url: str, timeout: float) -> ServerSync:
    shown = urlsplit(url)._replace(query="", fragment="").geturl()
    try:
        body = await asyncio.to_thread(_get, f"{url}/varz", timeout)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or type(exc).__name__
        return ServerSync(shown, error=str(reason)[:200])
    return parse_varz(shown, body)


async def check(urls: Sequence[str], timeout: float = 3.0) -> SyncVerdict:
    """Read every server's ``/varz`` and decide."""
    return verdict(await asyncio.gather(*(_one(url, timeout) for url in urls)))


class SyncWatch:
    """The verdict for ``NATS_MONITOR_URL``, read again at most every ``every_s``. The first
    verdict is logged, later ones when they change: a warning unless every server fsyncs."""

    def __init__(self, setting: str, *, every_s: float = 60.0, timeout_s: float = 2.0) -> None:
        self.urls = monitor_urls(setting)
        self.current = verdict([])
        self.every_s, self._timeout = every_s, timeout_s
        self._next = 0.0
        self._logged = False

    async def refresh(self) -> SyncVerdict:
        now = time.monotonic()
        if self.urls and now >= self._next:
            self._next = now + self.every_s
            found = await check(self.urls, self._timeout)
            if found != self.current:
                self._logged = False
            self.current = found
        if not self._logged:
            self._logged = True
            level = (
                logging.INFO if self.current.state is SyncState.ALWAYS or not self.urls else logging.WARNING
            )
            log.log(
                level,
                "nats fsync-before-ack: %s",
                self.current.state.value,
                extra={"detail": self.current.message},
            )
        return self.current
