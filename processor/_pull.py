"""Pull requests for one partition consumer, on an inbox this pod owns.

nats-py's ``fetch`` first takes every message already queued on its subscription (deliveries that
arrived after an earlier fetch gave up), then sends a request; if that request is answered with a
status it treats as an error (503: the consumer has no leader, during a leader change), it raises
and the messages it had taken are dropped. They were delivered, so JetStream redelivers them only
after ``ack_wait``: a 30 s stall of the partition after a consumer-leader change. Here a delivered
message is never dropped: data goes to a queue that only :meth:`PartitionPull.fetch` empties, and
status messages only end the request they answer.

At most one pull request is open at a time, so the messages delivered beyond what a fetch returns
stay bounded by one request's batch (the next fetch takes them first).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time

import msgspec
import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from medevents import topology

__all__ = ["PartitionPull", "PullFailed"]

_encode = msgspec.json.Encoder().encode
_EXPIRY_MARGIN_S = 0.05  # the request expires on the server a little before the fetch gives up
_END_GRACE_S = 0.5  # after its expiry, how long a stopping pull waits for the request's end status


class PullFailed(nats.errors.Error):
    """The pull request was refused (no consumer leader: 503; or another error status)."""

    def __init__(self, status: str, description: str = "") -> None:
        super().__init__(f"pull request refused: {status} {description}".strip())
        self.status = status


class PartitionPull:
    """Fetches for one durable pull consumer of stream EVENTS."""

    def __init__(self, nc: NATS, partition: int) -> None:
        self._nc = nc
        self._subject = f"$JS.API.CONSUMER.MSG.NEXT.{topology.STREAM}.{topology.consumer_name(partition)}"
        self._inbox = nc.new_inbox()
        self._queue: collections.deque[Msg] = collections.deque()
        self._arrived = asyncio.Event()
        self._open_until = 0.0  # monotonic expiry of the open request (0: none open)
        self._open_left = 0  # messages the open request may still deliver
        self._refused: PullFailed | None = None
        self._sub: Subscription | None = None

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(self._inbox, cb=self._on_msg)

    async def stop(self) -> None:
        """Let the open pull request end, unsubscribe, and hand back (NAK) what was delivered but
        never fetched, so that the partition's next owner gets it now rather than after the ack wait.

        Deliveries of a request still open, sent before the unsubscribe but not yet read by a busy
        process, are discarded with the subscription; JetStream counts them delivered and sends
        them again only after the ack wait, so a partition handed to another pod (at start-up, on
        scaling) stalled that long. The request's end status comes after its deliveries, so once
        it is in (or the batch is complete) nothing more is on the way. The wait is bounded by the
        request's expiry (one fetch timeout) plus a grace for that status."""
        with contextlib.suppress(nats.errors.Error):  # closing: nothing arrives either way
            while (
                self._sub is not None
                and self._nc.is_connected
                and self._open_until > 0.0
                and time.monotonic() < self._open_until + _END_GRACE_S
            ):
                self._arrived.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._open_until + _END_GRACE_S - time.monotonic()):
                        await self._arrived.wait()
            if self._sub is not None:
                await self._sub.unsubscribe()
            while self._queue:
                await self._queue.popleft().nak()
        self._sub = None

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def _on_msg(self, msg: Msg) -> None:
        status = msg.headers.get("Status") if msg.headers else None
        if status is None:
            self._queue.append(msg)
            self._open_left -= 1
            if self._open_left <= 0:
                self._open_until = 0.0  # its batch is complete: the server sends no status then
        elif status == "100":
            return  # idle heartbeat or flow control (not requested): nothing ends
        else:
            # 404 no messages, 408 expired, 409 leadership change / consumer deleted / too many
            # requests: this request is over. 503: nobody took it (no consumer leader).
            self._open_until = 0.0
            if status not in ("404", "408", "409"):
                self._refused = PullFailed(status, msg.headers.get("Description", "") if msg.headers else "")
        self._arrived.set()

    async def fetch(self, batch: int, timeout: float) -> list[Msg]:
        """Up to ``batch`` delivered messages, waiting at most ``timeout`` for the first one.

        Returns an empty list when nothing came; raises :class:`PullFailed` when the request was
        refused and nothing is queued (queued messages are returned first in any case)."""
        now = time.monotonic()
        deadline = now + timeout
        if not self._queue and now >= self._open_until:
            self._refused = None
            expires = max(0.01, timeout - _EXPIRY_MARGIN_S)
            request = {"batch": batch, "expires": int(expires * 1e9)}
            self._open_until, self._open_left = now + timeout, batch
            await self._nc.publish(self._subject, _encode(request), reply=self._inbox)
        while not self._queue:
            remaining = deadline - time.monotonic()
            if self._refused is not None:
                refused, self._refused = self._refused, None
                raise refused
            if remaining <= 0 or time.monotonic() >= self._open_until:
                return []
            self._arrived.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._arrived.wait()
            except TimeoutError:
                return []
        await asyncio.sleep(0)  # let the rest of a batch that arrived together be queued
        return [self._queue.popleft() for _ in range(min(batch, len(self._queue)))]
