"""Publishing accepted events to JetStream: an answer only after the PubAck (durable), or a clear
reason why not."""

from __future__ import annotations

import asyncio
import logging
import time

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from medevents import topology
from medevents.config import IngestSettings, NatsSettings, StreamSettings
from medevents.natsconn import connect, ensure_stream

from ._metrics import IngestMetrics

__all__ = ["Publisher", "Unavailable"]

log = logging.getLogger("medevents.ingest")

# JetStream error codes that mean "the stream cannot take more" (discard: new): maximum
# messages, bytes, or messages per subject reached, or the store itself is out of resources.
_STREAM_FULL = {10077, 10047, 10078, 10023}


class Unavailable(Exception):
    """The event could not be made durable now; the client should retry (503 + Retry-After)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


class Publisher:
    """One NATS connection per process. Publishes without awaiting each request in turn: many
    PubAcks are pending at once on one reply subscription (about twice the rate of awaiting
    ``js.publish`` from many coroutines, see FINDINGS.md), bounded by ``max_pending``.

    nats-py's own ``publish_async`` is not used: when JetStream answers with an error (stream
    full), it raises inside its reply callback and the waiting future never resolves.
    """

    def __init__(
        self,
        nats_settings: NatsSettings,
        stream_settings: StreamSettings,
        settings: IngestSettings,
        metrics: IngestMetrics,
    ) -> None:
        self._nats_settings = nats_settings
        self._stream_settings = stream_settings
        self._timeout = settings.publish_timeout_s
        self._slots = asyncio.Semaphore(settings.max_pending_publishes)
        self._metrics = metrics
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._inbox = ""
        self._next_token = 0
        self._pending: dict[str, asyncio.Future[bytes]] = {}

    async def start(self) -> None:
        self._nc = await connect(self._nats_settings, "medevents-ingest", on_state=self._on_state)
        self._js = self._nc.jetstream(timeout=self._nats_settings.request_timeout_s)
        self._inbox = self._nc.new_inbox() + "."
        await self._nc.subscribe(self._inbox + "*", cb=self._on_reply)
        await ensure_stream(self._js, self._stream_settings)

    async def _on_state(self, state: str) -> None:
        self._metrics.nats_connected.set(1 if state == "reconnected" else 0)

    async def _on_reply(self, msg: Msg) -> None:
        future = self._pending.pop(msg.subject[len(self._inbox) :], None)
        if future is None or future.done():
            return
        if msg.headers and msg.headers.get("Status") == "503":
            future.set_exception(nats.js.errors.NoStreamResponseError())
        else:
            future.set_result(msg.data)

    async def close(self) -> None:
        """Wait for pending PubAcks (their HTTP requests are still being answered), then drain."""
        if self._nc is None:
            return
        deadline = time.monotonic() + self._timeout
        while self._pending and self._nc.is_connected and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if self._nc.is_closed:
            return
        try:
            await self._nc.drain()
        except nats.errors.ConnectionReconnectingError:
            await self._nc.close()  # NATS is away: nothing could be flushed to it anyway

    def jetstream(self) -> JetStreamContext:
        """This connection's JetStream context, for reads (the patient summary's pending count)."""
        if self._nc is None or self._js is None or not self._nc.is_connected:
            raise Unavailable("nats_down", "NATS is not connected")
        return self._js

    async def readiness(self) -> list[str]:
        if self._nc is None or self._js is None:
            return ["not started"]
        if not self._nc.is_connected:
            return ["NATS is not connected"]
        try:
            await self._js.stream_info(topology.STREAM)
        except NotFoundError:
            return [f"stream {topology.STREAM} does not exist"]
        except (nats.errors.Error, TimeoutError) as exc:
            return [f"JetStream does not answer ({type(exc).__name__})"]
        return []

    async def publish(self, subject: str, payload: bytes, event_id: str) -> bool:
        """Publish and wait for the PubAck; True when JetStream already had ``event_id``."""
        nc = self._nc
        if nc is None or not nc.is_connected:
            raise Unavailable("nats_down", "NATS is not connected; the event was not accepted")
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout):
                async with self._slots:
                    reply = await self._request(nc, subject, payload, event_id)
        except TimeoutError:
            raise Unavailable("timeout", f"no JetStream acknowledgement within {self._timeout:g} s") from None
        except nats.js.errors.NoStreamResponseError:
            raise Unavailable("no_stream", f"stream {topology.STREAM} does not answer") from None
        except nats.errors.ConnectionClosedError:
            raise Unavailable("nats_down", "NATS connection closed; the event was not accepted") from None
        ack = _decode_ack(reply)
        if ack.error is not None:
            if ack.error.err_code in _STREAM_FULL:
                raise Unavailable("stream_full", "the event stream is full; retry later")
            raise Unavailable("jetstream_error", f"JetStream refused the event ({ack.error.err_code})")
        self._metrics.publish_seconds.observe(time.perf_counter() - started)
        return ack.duplicate

    async def _request(self, nc: NATS, subject: str, payload: bytes, event_id: str) -> bytes:
        token = str(self._next_token)
        self._next_token += 1
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[token] = future
        try:
            await nc.publish(subject, payload, reply=self._inbox + token, headers={"Nats-Msg-Id": event_id})
            return await future
        finally:
            self._pending.pop(token, None)


class _ApiError(msgspec.Struct):
    code: int = 0
    err_code: int = 0
    description: str = ""


class _PubAck(msgspec.Struct):
    stream: str = ""
    seq: int = 0
    duplicate: bool = False
    error: _ApiError | None = None


_decode_ack = msgspec.json.Decoder(_PubAck).decode
