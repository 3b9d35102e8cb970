"""Acknowledgements that are confirmed, and sent again until they are.

nats-py's ``ack`` is fire-and-forget. On a cluster, an ack that reaches a consumer while its
leader changes is lost: JetStream keeps the message, counts it as lag (the operator would scale on
work that is done) and redelivers it only after ``ack_wait``. So every ack here carries a reply
subject: the consumer leader answers once it applied the ack (on a replicated consumer, once the
ack is committed), or the server answers at once that nobody took it (no leader). An ack not
confirmed within :data:`FIRST_RESEND_S` is sent again, with back-off, until it is confirmed or its
ack wait has passed (JetStream then redelivers the message and the fence acks it as done).

The lane never waits for a confirmation: the cost is one small reply message per event, handled by
one subscription, and a resend only when a confirmation is late.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from ._tasks import cancel_and_wait

__all__ = ["AckConfirmer"]

log = logging.getLogger("medevents.processor")

ACK = b"+ACK"
FIRST_RESEND_S = 1.0  # an ack not confirmed this long after it was sent is sent again
MAX_RESEND_S = 2.0  # ... with the wait doubling up to this (about the delay after a new leader)
TICK_S = 0.25


@dataclass
class _Pending:
    subject: str  # the message's ack subject ($JS.ACK.<stream>.<consumer>....)
    first_sent: float  # monotonic
    next_send: float
    sends: int = 1


class AckConfirmer:
    """Sends acks with a reply subject and re-sends the unconfirmed ones (one per process)."""

    def __init__(
        self,
        nc: NATS,
        *,
        give_up_after_s: Callable[[], float],
        on_resend: Callable[[], None] | None = None,
        on_give_up: Callable[[], None] | None = None,
    ) -> None:
        self._nc = nc
        self._give_up_after = give_up_after_s  # the ack wait in force: redelivery takes over then
        self._on_resend = on_resend
        self._on_give_up = on_give_up
        self._prefix = ""
        self._next_token = 0
        self._pending: dict[str, _Pending] = {}
        self._task: asyncio.Task[None] | None = None

    @property
    def unconfirmed(self) -> int:
        return len(self._pending)

    async def start(self) -> None:
        self._prefix = self._nc.new_inbox() + "."
        await self._nc.subscribe(self._prefix + "*", cb=self._on_reply)
        self._task = asyncio.create_task(self._resend_loop(), name="ack-resend")

    async def ack(self, msg: Msg) -> None:
        """Acknowledge ``msg``; its confirmation is awaited in the background."""
        token = str(self._next_token)
        self._next_token += 1
        now = time.monotonic()
        self._pending[token] = _Pending(msg.reply, now, now + FIRST_RESEND_S)
        await self._send(token, msg.reply)

    async def _send(self, token: str, subject: str) -> None:
        try:
            await self._nc.publish(subject, ACK, reply=self._prefix + token)
        except nats.errors.Error as exc:  # closed or reconnecting with a full buffer: resent later
            log.debug("ack not sent", extra={"error": type(exc).__name__})

    async def _on_reply(self, msg: Msg) -> None:
        token = msg.subject[len(self._prefix) :]
        if msg.headers and msg.headers.get("Status") == "503":
            return  # no consumer leader took it: the resend loop sends it again
        self._pending.pop(token, None)

    async def _resend_loop(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            if not self._pending or not self._nc.is_connected:
                continue
            now = time.monotonic()
            give_up = self._give_up_after()
            for token, pending in list(self._pending.items()):
                if pending.next_send > now:
                    continue
                if now - pending.first_sent > give_up:
                    del self._pending[token]
                    if self._on_give_up is not None:
                        self._on_give_up()
                    continue
                pending.sends += 1
                pending.next_send = now + min(MAX_RESEND_S, FIRST_RESEND_S * 2 ** (pending.sends - 1))
                if self._on_resend is not None:
                    self._on_resend()
                await self._send(token, pending.subject)

    async def close(self, grace_s: float = 1.0) -> None:
        """Stop re-sending, after giving outstanding confirmations up to ``grace_s``."""
        deadline = time.monotonic() + grace_s
        while self._pending and self._nc.is_connected and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self._task is not None:
            await cancel_and_wait([self._task])
            self._task = None
        with contextlib.suppress(nats.errors.Error):
            await self._nc.flush(timeout=1)
