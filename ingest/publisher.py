"""Publishing accepted events to JetStream: an answer only after the PubAck (durable), or a clear
reason why not.

**Group commit.** With nats-server fsyncing before every PubAck (the shipped configuration), a
single publish costs one fsync, and the server stores a stream's messages one after another: the
stream takes about one publish per fsync. So the publisher keeps at most :data:`MAX_GROUPS`
sends under way; events that arrive meanwhile wait, and go out together as one JetStream atomic
batch (nats-server 2.12+, stream ``allow_atomic``) when a send completes. The server stores the
batch's messages and fsyncs once before the commit's single PubAck (checked on nats-server 2.15.1
with strace: the batch's writes, one fsync of the message block, then the PubAck; see
docs/BENCHMARKS.md), so every event of a batch is on disk before any of them is answered, as with
single publishes. A batch is all or nothing: when JetStream refuses it (one event it already has,
error 10201, is enough) none of it was stored, and its events are published one by one so each
gets its own answer (``duplicate`` or not). With few events waiting (under :data:`MIN_BATCH`), on
a stream without ``allow_atomic`` (created by an older medevents or nats-server), and after the
server said it does not take batches, events go out one by one as before.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
import uuid

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from medevents import topology, tracing
from medevents.config import IngestSettings, NatsSettings, StreamSettings
from medevents.natsconn import connect, ensure_stream

from ._metrics import IngestMetrics

__all__ = ["MAX_BATCH", "MAX_GROUPS", "MIN_BATCH", "Publisher", "Unavailable"]

log = logging.getLogger("medevents.ingest")

# JetStream error codes that mean "the stream cannot take more" (discard: new): maximum
# messages, bytes, or messages per subject reached, or the store itself is out of resources.
_STREAM_FULL = {10077, 10047, 10078, 10023}
_ATOMIC_DISABLED = 10174  # the stream does not take atomic batches (allow_atomic is off)

MAX_GROUPS = 2  # sends (one batch, or a few single publishes) awaiting their PubAcks at once
MIN_BATCH = 4  # fewer waiting events go out one by one: a batch costs the server ~3 fsyncs more
MAX_BATCH = 256  # events in one atomic batch (JetStream takes up to 1,000)
_SWEEP_S = 0.05  # how often publishes past their deadline are answered with a timeout


READINESS_BUDGET_S = 2.0  # /readyz's JetStream check gives up after this (the chart's probe waits 3 s)

# A publish may have been stored even though no PubAck came back (it was lost in a leader change
# or with the connection); the duplicate window makes a retry with the same event id safe.
_NOT_KNOWN = (
    "the event is not known to be accepted (it may have been stored): retry with the same event id, "
    "a stored one is answered as a duplicate"
)


class _ConnectionLost(Exception):
    """The connection dropped while the PubAck was awaited."""


class Unavailable(Exception):
    """The event could not be made durable now; the client should retry (503 + Retry-After)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


class _Item:
    """One event waiting to be sent or for its PubAck."""

    __slots__ = ("deadline", "event_id", "future", "payload", "subject", "trace")

    def __init__(
        self,
        subject: str,
        payload: bytes,
        event_id: str,
        future: asyncio.Future[_PubAck],
        deadline: float,
        trace: dict[str, str] | None,
    ) -> None:
        self.subject = subject
        self.payload = payload
        self.event_id = event_id
        self.future = future
        self.deadline = deadline
        self.trace = trace  # the request's trace context headers, while tracing is on

    def headers(self) -> dict[str, str]:
        return {"Nats-Msg-Id": self.event_id, **(self.trace or {})}

    def trace_lines(self) -> bytes:
        """The trace context as header lines (W3C traceparent/tracestate: visible ASCII)."""
        if not self.trace:
            return b""
        return b"".join(b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in self.trace.items())


class _Group:
    """Events sent together: one atomic batch, or single publishes; done when every PubAck (or
    the batch's one) came back, or every event was answered otherwise (timeout)."""

    __slots__ = ("items", "open", "tokens")

    def __init__(self, items: list[_Item]) -> None:
        self.items = items
        self.tokens: list[str] = []
        self.open = 0  # replies still awaited


class Publisher:
    """One NATS connection per process. Publishes without awaiting each request in turn: PubAcks
    come back on one reply subscription (about twice the rate of awaiting ``js.publish`` from many
    coroutines, see FINDINGS.md), with group commit on top (module docstring); at most
    ``max_pending_publishes`` events are waiting at once.

    nats-py's own ``publish_async`` is not used: when JetStream answers with an error (stream
    full), it raises inside its reply callback and the waiting future never resolves. Deadlines
    are kept by one sweeper task rather than a timer per publish (a per-request ``asyncio.timeout``
    cost about a tenth of a request's CPU).
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
        self._max_waiting = settings.max_pending_publishes
        self._metrics = metrics
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._inbox = ""
        self._next_token = 0
        self._batch_prefix = uuid.uuid4().hex[:16]
        self.atomic = False  # the stream takes atomic batches
        self._queue: collections.deque[_Item] = collections.deque()  # waiting to be sent
        self._by_deadline: collections.deque[_Item] = collections.deque()  # every unanswered event
        self._waiting = 0  # events not answered yet
        self._room = asyncio.Event()
        self._pending: dict[str, tuple[_Group, _Item | None]] = {}  # reply token -> its send
        self._groups: set[_Group] = set()  # sends awaiting replies
        self._sweeper: asyncio.Task[None] | None = None
        self._raw = False  # frames straight into nats-py's buffer (see _hpub)

    async def start(self) -> None:
        self._nc = await connect(self._nats_settings, "medevents-ingest", on_state=self._on_state)
        self._js = self._nc.jetstream(timeout=self._nats_settings.request_timeout_s)
        self._inbox = self._nc.new_inbox() + "."
        await self._nc.subscribe(self._inbox + "*", cb=self._on_reply)
        self._raw = all(callable(getattr(self._nc, m, None)) for m in ("_send_command", "_flush_pending"))
        info = await ensure_stream(self._js, self._stream_settings)
        self.atomic = bool(info.config.allow_atomic)
        if not self.atomic:
            log.info(
                "stream takes no atomic batches: events are published one by one",
                extra={"stream": topology.STREAM},
            )
        self._sweeper = asyncio.create_task(self._sweep(), name="publish-deadlines")

    async def _on_state(self, state: str) -> None:
        self._metrics.nats_connected.set(1 if state == "reconnected" else 0)
        if state == "disconnected":
            # A PubAck cannot arrive over a connection that is gone (the reply is not kept for
            # the new one): answer now instead of when the publish timeout runs out.
            # Events still queued were never sent: they are not accepted, and say so now too.
            pending, self._pending = self._pending, {}
            queued, self._queue = self._queue, collections.deque()
            self._groups.clear()
            for group, item in pending.values():
                for each in group.items if item is None else [item]:
                    if not each.future.done():
                        each.future.set_exception(_ConnectionLost())
            for each in queued:
                if not each.future.done():
                    each.future.set_exception(nats.errors.ConnectionClosedError())

    async def _on_reply(self, msg: Msg) -> None:
        entry = self._pending.pop(msg.subject[len(self._inbox) :], None)
        if entry is None:
            return  # answered already (its deadline passed)
        group, item = entry
        error: Exception | None = None
        ack: _PubAck | None = None
        if msg.headers and msg.headers.get("Status") == "503":
            error = nats.js.errors.NoStreamResponseError()
        else:
            try:
                ack = _decode_ack(msg.data)
            except msgspec.DecodeError:
                ack = _PubAck(error=_ApiError(err_code=-1, description="undecodable PubAck"))
        if item is not None:  # a single publish
            _answer(item, ack, error)
            group.open -= 1
        elif ack is not None and ack.error is not None and ack.error.err_code not in _STREAM_FULL:
            # The batch was refused and nothing of it stored: publish its events one by one.
            if ack.error.err_code == _ATOMIC_DISABLED:
                self.atomic = False
            group.items = [i for i in group.items if not i.future.done()]
            group.open = 0
            log.debug("atomic batch refused; publishing one by one", extra={"code": ack.error.err_code})
            await self._send_singles(group)
        else:
            for each in group.items:
                _answer(each, ack, error)
            group.open = 0
        if group.open <= 0:
            await self._finished(group)

    async def _finished(self, group: _Group) -> None:
        """A send is complete: forget its replies, send what waited meanwhile."""
        if group in self._groups:
            self._groups.discard(group)
            for token in group.tokens:
                self._pending.pop(token, None)
        if self._queue:
            await self._send_queued()

    async def _sweep(self) -> None:
        """Answer events past their deadline with a timeout; give up on sends whose events were all
        answered (a PubAck lost with a connection), so they stop holding a send slot."""
        while True:
            await asyncio.sleep(_SWEEP_S)
            now = time.monotonic()
            queue = self._by_deadline
            while queue and (queue[0].future.done() or queue[0].deadline <= now):
                item = queue.popleft()
                if not item.future.done():
                    item.future.set_exception(TimeoutError())
            for group in [g for g in self._groups if all(i.future.done() for i in g.items)]:
                await self._finished(group)

    async def close(self) -> None:
        """Wait for pending PubAcks (their HTTP requests are still being answered), then drain."""
        if self._nc is None:
            return
        deadline = time.monotonic() + self._timeout
        while self._waiting and self._nc.is_connected and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if self._sweeper is not None:
            self._sweeper.cancel()
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
        """Ready when a publish can succeed now: connected, and the stream exists and has a leader
        (on a cluster, a publish fails while the stream elects one). Answers within
        :data:`READINESS_BUDGET_S`, under the chart's probe timeout."""
        if self._nc is None:
            return ["not started"]
        if not self._nc.is_connected:
            return ["NATS is not connected"]
        try:
            info = await self._nc.jetstream(timeout=READINESS_BUDGET_S).stream_info(topology.STREAM)
        except NotFoundError:
            return [f"stream {topology.STREAM} does not exist"]
        except (nats.errors.Error, TimeoutError) as exc:
            return [f"JetStream does not answer ({type(exc).__name__})"]
        if info.cluster is not None and not info.cluster.leader:
            return [f"stream {topology.STREAM} has no leader (an election is under way)"]
        return []

    async def publish(self, subject: str, payload: bytes, event_id: str) -> bool:
        """Publish and wait for the PubAck; True when JetStream already had ``event_id``."""
        nc = self._nc
        if nc is None or not nc.is_connected:
            raise Unavailable("nats_down", "NATS is not connected; the event was not accepted")
        started = time.perf_counter()
        deadline = time.monotonic() + self._timeout
        if self._waiting >= self._max_waiting:
            await self._wait_for_room(deadline)
        future: asyncio.Future[_PubAck] = asyncio.get_running_loop().create_future()
        trace: dict[str, str] | None = None
        if tracing.enabled:
            trace = {}
            tracing.inject(trace)  # the trace goes on in the processor
        item = _Item(subject, payload, event_id, future, deadline, trace)
        self._queue.append(item)
        self._by_deadline.append(item)
        self._waiting += 1
        try:
            if len(self._groups) < MAX_GROUPS:
                await self._send_queued()
            ack = await future
        except TimeoutError:
            raise Unavailable(
                "timeout", f"no JetStream acknowledgement within {self._timeout:g} s; {_NOT_KNOWN}"
            ) from None
        except _ConnectionLost:
            raise Unavailable(
                "nats_down", f"NATS connection lost before the acknowledgement; {_NOT_KNOWN}"
            ) from None
        except nats.js.errors.NoStreamResponseError:
            raise Unavailable(
                "no_stream", f"stream {topology.STREAM} does not answer; the event was not accepted"
            ) from None
        except nats.errors.ConnectionClosedError:
            raise Unavailable("nats_down", "NATS connection closed; the event was not accepted") from None
        except nats.errors.Error as exc:
            raise Unavailable("nats_down", f"NATS refused the publish ({type(exc).__name__})") from None
        finally:
            self._waiting -= 1
            if self._waiting < self._max_waiting:
                self._room.set()
        if ack.error is not None:
            if ack.error.err_code in _STREAM_FULL:
                raise Unavailable("stream_full", "the event stream is full; retry later")
            raise Unavailable("jetstream_error", f"JetStream refused the event ({ack.error.err_code})")
        self._metrics.publish_seconds.observe(time.perf_counter() - started)
        return ack.duplicate

    async def _wait_for_room(self, deadline: float) -> None:
        """``max_pending_publishes`` events are waiting: wait until one is answered."""
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                while self._waiting >= self._max_waiting:
                    self._room.clear()
                    await self._room.wait()
        except TimeoutError:
            raise Unavailable("timeout", f"no JetStream acknowledgement within {self._timeout:g} s") from None

    def _token(self) -> str:
        token = str(self._next_token)
        self._next_token += 1
        return token

    def _take(self) -> list[_Item]:
        """The next events to send together: up to :data:`MAX_BATCH` unanswered ones, no event id
        twice (a batch repeating an id is refused whole; the repeat goes in the next send)."""
        items: list[_Item] = []
        ids: set[str] = set()
        later: list[_Item] = []
        queue = self._queue
        while queue and len(items) < MAX_BATCH:
            item = queue.popleft()
            if item.future.done():
                continue
            if item.event_id in ids:
                later.append(item)
                continue
            ids.add(item.event_id)
            items.append(item)
        queue.extendleft(reversed(later))
        return items

    async def _send_queued(self) -> None:
        """Send waiting events while fewer than :data:`MAX_GROUPS` sends are under way."""
        while self._queue and len(self._groups) < MAX_GROUPS:
            items = self._take()
            if not items:
                return
            group = _Group(items)
            self._groups.add(group)
            if self.atomic and len(items) >= MIN_BATCH:
                self._metrics.publish_batch.observe(len(items))
                await self._send_batch(group)
            else:
                for _ in items:
                    self._metrics.publish_batch.observe(1)
                await self._send_singles(group)

    def _direct(self, group: _Group) -> bool:
        """Whether the group's frames can go straight into nats-py's buffer (see :func:`_hpub`):
        the client has the methods, the connection is up (else nats-py's buffering rules, in
        ``publish``, apply) and every payload is within the server's limit."""
        nc = self._nc
        assert nc is not None
        return (
            self._raw
            and nc.is_connected
            and not nc.is_draining_pubs
            and all(len(i.payload) <= nc.max_payload for i in group.items)
        )

    async def _write(self, frames: list[bytes], messages: int, size: int) -> None:
        """Frames into nats-py's outgoing buffer, flushed as ``publish`` does."""
        nc = self._nc
        assert nc is not None
        nc.stats["out_msgs"] += messages
        nc.stats["out_bytes"] += size
        await nc._send_command(b"".join(frames))
        if nc._flush_queue is not None and nc._flush_queue.empty():
            await nc._flush_pending()

    async def _send_singles(self, group: _Group) -> None:
        nc = self._nc
        assert nc is not None
        items = [i for i in group.items if not i.future.done()]
        tokens = [self._token() for _ in items]
        for token, item in zip(tokens, items, strict=True):
            self._pending[token] = (group, item)
        group.tokens += tokens
        group.open += len(items)
        if self._direct(group):
            inbox = self._inbox
            frames = [
                _hpub(
                    item.subject,
                    (inbox + token).encode(),
                    b"NATS/1.0\r\nNats-Msg-Id: %s\r\n%s\r\n" % (item.event_id.encode(), item.trace_lines()),
                    item.payload,
                )
                for token, item in zip(tokens, items, strict=True)
            ]
            try:
                await self._write(frames, len(items), sum(len(i.payload) for i in items))
            except nats.errors.Error as exc:
                for token, item in zip(tokens, items, strict=True):
                    self._failed(group, token, item, exc)
        else:
            for token, item in zip(tokens, items, strict=True):
                try:
                    await nc.publish(
                        item.subject,
                        item.payload,
                        reply=self._inbox + token,
                        headers=item.headers(),
                    )
                except nats.errors.Error as exc:
                    self._failed(group, token, item, exc)
        if group.open <= 0:
            await self._finished(group)

    def _failed(self, group: _Group, token: str, item: _Item, exc: Exception) -> None:
        if self._pending.pop(token, None) is not None:
            group.open -= 1
        if not item.future.done():
            item.future.set_exception(exc)

    async def _send_batch(self, group: _Group) -> None:
        """One JetStream atomic batch (ADR-50): every message carries the batch id and its place;
        the last one commits and asks for the PubAck."""
        nc = self._nc
        assert nc is not None
        token = self._token()
        batch_id = self._batch_prefix + token
        self._pending[token] = (group, None)
        group.tokens.append(token)
        group.open = 1
        last = len(group.items)
        try:
            if self._direct(group):
                reply = (self._inbox + token).encode()
                bid = batch_id.encode()
                frames = [
                    _hpub(
                        item.subject,
                        reply if n == last else b"",
                        _BATCH_HEADERS
                        % (
                            item.event_id.encode(),
                            bid,
                            n,
                            item.trace_lines() + (b"Nats-Batch-Commit: 1\r\n" if n == last else b""),
                        ),
                        item.payload,
                    )
                    for n, item in enumerate(group.items, 1)
                ]
                await self._write(frames, last, sum(len(i.payload) for i in group.items))
                return
            for n, item in enumerate(group.items, 1):
                headers = {**item.headers(), "Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(n)}
                if n == last:
                    headers["Nats-Batch-Commit"] = "1"
                await nc.publish(
                    item.subject,
                    item.payload,
                    reply=self._inbox + token if n == last else "",
                    headers=headers,
                )
        except nats.errors.Error as exc:  # the batch is incomplete: the server drops it
            self._pending.pop(token, None)
            for item in group.items:
                if not item.future.done():
                    item.future.set_exception(exc)
            group.open = 0
            await self._finished(group)


_BATCH_HEADERS = b"NATS/1.0\r\nNats-Msg-Id: %s\r\nNats-Batch-Id: %s\r\nNats-Batch-Sequence: %d\r\n%s\r\n"


def _hpub(subject: str, reply: bytes, headers: bytes, payload: bytes) -> bytes:
    """One NATS ``HPUB`` frame (a message with headers).

    nats-py's ``publish`` checks the subject and builds the header block with a regular expression
    per header, for every message: about 9 us a message with the batch headers, most of what a
    batched event costs the publisher. These frames carry subjects built by
    ``medevents.subjects`` (tokens are plain or base64url) and event ids that passed
    ``EVENT_ID_PATTERN`` (visible ASCII, no spaces), so the checks cannot fail; the frames go
    into nats-py's own outgoing buffer through the two private methods ``publish`` uses
    (``_send_command``, ``_flush_pending``). A client without them gets ``publish``.
    """
    size = len(headers)
    if reply:
        return b"HPUB %s %s %d %d\r\n%s%s\r\n" % (
            subject.encode(),
            reply,
            size,
            size + len(payload),
            headers,
            payload,
        )
    return b"HPUB %s %d %d\r\n%s%s\r\n" % (subject.encode(), size, size + len(payload), headers, payload)


def _answer(item: _Item, ack: _PubAck | None, error: Exception | None) -> None:
    if item.future.done():
        return
    if error is not None:
        item.future.set_exception(error)
    else:
        assert ack is not None
        item.future.set_result(ack)


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
