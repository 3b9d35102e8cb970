"""One processor pod: partition pull loops, membership, heartbeats, lanes and the applier, wired
together, with start-up, readiness and a graceful drain."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from medevents import store, topology, tracing
from medevents.cluster import Member, Tuning, owned_partitions
from medevents.config import MongoSettings, NatsSettings, ProcessorSettings, StreamSettings
from medevents.natsconn import connect, ensure_stream
from medevents.store import Document
from medevents.subjects import token_of_stored

from . import _tracing
from ._metrics import ProcessorMetrics
from ._tasks import cancel_and_wait
from .applier import Applier, LiveSettings
from .consumers import CRITICAL_FIELDS, ensure_consumer
from .deadletter import event_id_of
from .handlers import Handler, load_handler
from .lanes import Capacity, HeldEvent, PatientLanes
from .membership import Registry
from .writer import EventStore

__all__ = ["Processor", "heartbeat_timing"]

log = logging.getLogger("medevents.processor")

FETCH_TIMEOUT_S = 1.0
STALL_S = 1.0  # full, all waiting, none finished for this long: pull a few beyond the limit
STALL_BATCH = 16


def heartbeat_timing(ack_wait_s: float) -> tuple[float, float]:
    """``(interval, abandon_after)`` for a consumer ack wait: heartbeats four times per ack wait;
    held work is abandoned once no heartbeat went out for 80% of it, before JetStream could hand
    it to another pod."""
    return ack_wait_s / 4, ack_wait_s * 0.8


def default_member_id() -> str:
    return f"{os.environ.get('HOSTNAME') or socket.gethostname()}-{secrets.token_hex(3)}"


@dataclass
class _PullLoop:
    task: asyncio.Task[None]
    stop: asyncio.Event


class Processor:
    """A processor pod's worth of work, started and stopped from one place."""

    def __init__(
        self,
        settings: ProcessorSettings,
        nats_settings: NatsSettings,
        stream_settings: StreamSettings,
        mongo_settings: MongoSettings,
        *,
        handler: Handler | None = None,
    ) -> None:
        self.settings = settings
        self._nats_settings = nats_settings
        self._stream_settings = stream_settings
        self._mongo_settings = mongo_settings
        self._handler = handler or load_handler(settings.handler)
        self.member_id = settings.member_id or default_member_id()
        self.pod = os.environ.get("HOSTNAME") or socket.gethostname()
        self.metrics = ProcessorMetrics()
        self.partitions = 0
        self.owned: list[int] = []
        self.draining = False
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._mongo: AsyncMongoClient[Document] | None = None
        self._store: EventStore | None = None
        self._registry: Registry | None = None
        self._loops: dict[int, _PullLoop] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._unpullable: dict[int, str] = {}  # partition -> critical consumer mismatch
        self._consumer_ack_wait: dict[int, float] = {}
        self._failing_since: dict[str, float] = {}
        self._tuning: Tuning | None = None
        self._applied_seen = 0.0
        self._rate = 0.0
        self.capacity = Capacity(settings.concurrency)
        self.metrics.capacity.set(settings.concurrency)
        _, abandon = heartbeat_timing(settings.ack_wait_s)
        self.live = LiveSettings(
            delay_min_ms=settings.delay_min_ms,
            delay_max_ms=settings.delay_max_ms,
            max_attempts=settings.max_attempts,
            abandon_after_s=abandon,
            retry_initial_s=settings.retry_initial_ms / 1000,
            retry_max_s=settings.retry_max_ms / 1000,
        )
        self.lanes: PatientLanes | None = None
        self.crashed = asyncio.Event()  # set when a task died of a bug: the process must exit

    # -- start ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, make sure the topology exists, and start pulling (fails fast when NATS or
        MongoDB is unreachable at start-up: the supervisor restarts the process)."""
        self._nc = await connect(self._nats_settings, f"medevents-processor-{self.member_id}")
        self._js = self._nc.jetstream(timeout=self._nats_settings.request_timeout_s)
        info = await ensure_stream(self._js, self._stream_settings)
        self.partitions = topology.partitions_of(info.config) or self._stream_settings.partitions
        self._mongo = store.mongo_client(self._mongo_settings, f"medevents-processor-{self.member_id}")
        db = store.database(self._mongo, self._mongo_settings)
        await store.ensure_indexes(db)
        self._store = EventStore(
            db,
            max_batch=self.settings.write_batch,
            write_window_s=self.settings.write_window_ms / 1000,
            read_window_s=self.settings.read_window_ms / 1000,
            on_write_batch=self.metrics.write_batch_size.observe,
        )
        for partition in range(self.partitions):
            await self._ensure_consumer(partition)
        self._registry = Registry(
            self._js,
            self.member_id,
            ttl_s=self.settings.member_ttl_s,
            replicas=self._stream_settings.replicas,
        )
        await self._registry.open()
        applier = Applier(
            nc=self._nc,
            js=self._js,
            store=self._store,
            handler=self._handler,
            live=self.live,
            metrics=self.metrics,
            member_id=self.member_id,
            request_timeout_s=self._nats_settings.request_timeout_s,
            on_transient=self._note_transient,
        )
        self.lanes = PatientLanes(
            applier.step, self.capacity, on_change=self._lanes_changed, on_crash=self._crashed
        )
        self.metrics.oldest_lane_seconds.set_function(self.lanes.longest_stuck)
        self._apply_ack_wait()
        await self._membership_tick()
        self._tasks = [
            self._watch(asyncio.create_task(self._membership_loop(), name="membership")),
            self._watch(asyncio.create_task(self._heartbeat_loop(), name="heartbeats")),
        ]
        log.info(
            "processor started",
            extra={"member": self.member_id, "partitions": self.partitions, "owned": self.owned},
        )

    async def _ensure_consumer(self, partition: int) -> None:
        assert self._js is not None
        info, mismatches = await ensure_consumer(
            self._js,
            partition,
            ack_wait_s=self.settings.ack_wait_s,
            max_ack_pending=self.settings.max_ack_pending,
        )
        self._consumer_ack_wait[partition] = float(info.config.ack_wait or self.settings.ack_wait_s)
        critical = [d for f, d in mismatches if f in CRITICAL_FIELDS]
        if critical:
            self._unpullable[partition] = "; ".join(critical)
        else:
            self._unpullable.pop(partition, None)
        self.metrics.consumer_mismatch.labels(str(partition)).set(1 if mismatches else 0)

    def _crashed(self, exc: BaseException) -> None:
        self.crashed.set()

    def _watch(self, task: asyncio.Task[None]) -> asyncio.Task[None]:
        """A background task that ends with an error is a bug: stop the process loudly."""

        def done(task: asyncio.Task[None]) -> None:
            if not task.cancelled() and task.exception() is not None:
                log.error(
                    "background task crashed", exc_info=task.exception(), extra={"task": task.get_name()}
                )
                self.crashed.set()

        task.add_done_callback(done)
        return task

    # -- state shared with the probes ---------------------------------------------------------

    def _note_transient(self, kind: str, failing: bool) -> None:
        if failing:
            self._failing_since.setdefault(kind, time.monotonic())
        else:
            self._failing_since.pop(kind, None)

    def _lanes_changed(self) -> None:
        assert self.lanes is not None
        self.metrics.in_flight.set(self.lanes.held)
        self.metrics.lanes.set(len(self.lanes))

    async def readiness(self) -> list[str]:
        """Why this pod is not ready (empty when it is): NATS, MongoDB, consumers, lasting errors."""
        reasons = []
        if self._nc is None or self._mongo is None:
            return ["starting"]
        if self.draining:
            reasons.append("draining")
        if not self._nc.is_connected:
            reasons.append("NATS is not connected")
        try:
            async with asyncio.timeout(2):
                await self._mongo.admin.command("ping")
        except (PyMongoError, TimeoutError) as exc:
            reasons.append(f"MongoDB does not answer ({type(exc).__name__})")
        for partition, why in sorted(self._unpullable.items()):
            reasons.append(f"consumer {topology.consumer_name(partition)} not pulled: {why}")
        now = time.monotonic()
        for kind, since in sorted(self._failing_since.items()):
            if now - since > self.settings.unhealthy_after_s:
                reasons.append(f"{kind} errors for {now - since:.0f} s")
        return reasons

    # -- membership and tuning ----------------------------------------------------------------

    def member(self) -> Member:
        return Member(
            id=self.member_id,
            pod=self.pod,
            in_flight=self.lanes.held if self.lanes else 0,
            capacity=self.capacity.limit,
            partitions=sorted(self._loops),
            processed_per_s=round(self._rate, 2),
            draining=self.draining,
            updated_at=time.time(),
        )

    async def _membership_loop(self) -> None:
        tick = min(1.0, self.settings.member_ttl_s / 3)
        while True:
            await asyncio.sleep(tick)
            applied = self.metrics.applied_count
            self._rate = 0.7 * self._rate + 0.3 * (applied - self._applied_seen) / tick
            self._applied_seen = applied
            await self._membership_tick()

    async def _membership_tick(self) -> None:
        """Heartbeat, read the live members and the tuning, and pull the partitions this pod owns."""
        assert self._registry is not None
        try:
            await self._registry.heartbeat(self.member())
            members = await self._registry.members()
            tuning = await self._registry.tuning()
        except (nats.errors.Error, TimeoutError) as exc:
            log.warning("membership not refreshed", extra={"error": type(exc).__name__})
            return
        self.metrics.members.set(len(members))
        if tuning != self._tuning:
            self._apply_tuning(tuning)
        if not self.draining:
            self._pull(owned_partitions(self.member_id, members, self.partitions))

    def _apply_tuning(self, tuning: Tuning | None) -> None:
        self._tuning = tuning
        t = tuning or Tuning()
        s = self.settings
        limit = t.concurrency or s.concurrency
        self.capacity.set_limit(limit)
        self.metrics.capacity.set(limit)
        delay_min = s.delay_min_ms if t.delay_min_ms is None else t.delay_min_ms
        delay_max = s.delay_max_ms if t.delay_max_ms is None else t.delay_max_ms
        self.live.delay_min_ms, self.live.delay_max_ms = min(delay_min, delay_max), max(delay_min, delay_max)
        self.live.max_attempts = t.max_attempts or s.max_attempts
        self._apply_ack_wait()
        log.info("tuning applied", extra={"generation": t.generation, "concurrency": limit})

    def effective_ack_wait(self) -> float:
        """The shortest of the configured, tuned and actual consumer ack waits: heartbeats must
        beat the strictest one in force."""
        waits = [self.settings.ack_wait_s, *self._consumer_ack_wait.values()]
        if self._tuning and self._tuning.ack_wait_s:
            waits.append(self._tuning.ack_wait_s)
        return min(waits)

    def _apply_ack_wait(self) -> None:
        _, self.live.abandon_after_s = heartbeat_timing(self.effective_ack_wait())

    def _pull(self, partitions: list[int]) -> None:
        """Start and stop pull loops so that exactly ``partitions`` are pulled."""
        wanted = {p for p in partitions if p not in self._unpullable}
        for partition in set(self._loops) - wanted:
            self._loops.pop(partition).stop.set()
        for partition in wanted - set(self._loops):
            stop = asyncio.Event()
            task = self._watch(
                asyncio.create_task(self._pull_loop(partition, stop), name=f"pull-{partition}")
            )
            self._loops[partition] = _PullLoop(task, stop)
        if sorted(wanted) != self.owned:
            self.owned = sorted(wanted)
            log.info("partitions changed", extra={"owned": self.owned})
        self.metrics.partitions_owned.set(len(self._loops))

    # -- pulling ------------------------------------------------------------------------------

    async def _pull_loop(self, partition: int, stop: asyncio.Event) -> None:
        assert self._js is not None
        psub = await self._js.pull_subscribe_bind(
            durable=topology.consumer_name(partition), stream=topology.STREAM
        )
        failures = 0
        try:
            while not stop.is_set():
                share = max(
                    1, min(self.settings.fetch_batch, self.capacity.limit // max(1, len(self._loops)))
                )
                try:
                    n = await asyncio.wait_for(self.capacity.reserve(share), FETCH_TIMEOUT_S)
                except TimeoutError:
                    # Full. If nothing has finished for a while, every held event may be waiting
                    # for an earlier one that JetStream can only redeliver to a pod that pulls:
                    # pull a few anyway (JetStream hands out due redeliveries first).
                    if self.lanes is None or not self.lanes.stalled(STALL_S):
                        continue
                    self.metrics.stall_fetches.inc()
                    n = self.capacity.force(min(STALL_BATCH, share))
                admitted = 0
                try:
                    msgs = await psub.fetch(n, timeout=FETCH_TIMEOUT_S)
                    admitted = sum(self._admit(m) for m in msgs)
                    failures = 0
                except TimeoutError:  # nothing to fetch (nats-py raises both its own and asyncio's)
                    pass
                except nats.errors.Error as exc:
                    self.metrics.transient_errors.labels("fetch").inc()
                    log.warning("fetch failed", extra={"partition": partition, "error": type(exc).__name__})
                    failures += 1
                    await asyncio.sleep(min(5.0, 0.1 * 2**failures))
                    if failures % 3 == 0:  # the consumer may have been deleted: create it again
                        with contextlib.suppress(nats.errors.Error, TimeoutError):
                            await self._ensure_consumer(partition)
                finally:
                    self.capacity.give_back(n - admitted)
        finally:
            with contextlib.suppress(nats.errors.Error):
                await psub.unsubscribe()

    def _admit(self, msg: Msg) -> bool:
        """Queue one delivered message in its patient's lane; False when it was already held."""
        assert self.lanes is not None
        meta = msg.metadata
        partition, token = token_of_stored(msg.subject)
        held = HeldEvent(
            msg=msg,
            sequence=meta.sequence.stream,
            subject=msg.subject,
            token=token,
            partition=partition,
            delivered=meta.num_delivered,
            accepted_at=meta.timestamp.timestamp(),
        )
        self.metrics.delivered.inc()
        admitted = self.lanes.admit(held)
        if admitted and tracing.enabled:
            _tracing.start(held, event_id_of(msg.headers, held.sequence))
        return admitted

    # -- heartbeats ---------------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        """``in_progress`` for every held event (queued or running), so ``ack_wait`` can stay short;
        an event whose heartbeat could not go out for too long is marked expired (abandoned)."""
        assert self._nc is not None and self.lanes is not None
        while True:
            interval, abandon_after = heartbeat_timing(self.effective_ack_wait())
            await asyncio.sleep(interval)
            now = time.monotonic()
            for held in self.lanes.events():
                if held.released or held.expired:
                    continue
                if now - held.last_beat > abandon_after:
                    held.expired = True
                    continue
                if not self._nc.is_connected:
                    continue
                try:
                    await held.msg.in_progress()
                except nats.errors.Error:
                    continue
                if self._nc.is_connected:
                    held.last_beat = now
                    self.metrics.heartbeats.inc()

    # -- shutdown -----------------------------------------------------------------------------

    async def _stop_pulling(self) -> None:
        """Stop every pull loop; a fetch under way finishes first (at most its timeout)."""
        loops = list(self._loops.values())
        self._loops.clear()
        for loop in loops:
            loop.stop.set()
        if loops:
            await asyncio.wait([loop.task for loop in loops], timeout=FETCH_TIMEOUT_S * 3)
        await cancel_and_wait(loop.task for loop in loops)
        self.metrics.partitions_owned.set(0)

    async def _release(self, events: list[HeldEvent]) -> None:
        """Hand events back to JetStream at once (NAK), heartbeats stopped first."""
        for held in events:
            held.released = True
        for held in events:
            with contextlib.suppress(nats.errors.Error):
                await held.msg.nak()
            self.metrics.released.inc()
            _tracing.note(held, "released")
            _tracing.finish(held)

    async def drain(self, grace_s: float | None = None) -> None:
        """SIGTERM: start nothing new, leave the partitions to others, stop fetching, hand back
        queued events, let running ones finish within the grace period, then hand back the rest."""
        grace = self.settings.shutdown_grace_s if grace_s is None else grace_s
        if self.draining or self.lanes is None:
            return
        self.draining = True
        log.info("draining", extra={"held": self.lanes.held, "grace_s": grace})
        deadline = time.monotonic() + grace
        self.lanes.pause()
        with contextlib.suppress(nats.errors.Error, TimeoutError, AssertionError):
            assert self._registry is not None
            await self._registry.heartbeat(self.member())  # draining: others take the partitions
        await self._stop_pulling()
        await self._release(self.lanes.take_queued())  # others can start on them right away
        while self.lanes.held and time.monotonic() < deadline:
            await self._release(self.lanes.take_queued())
            await self.lanes.wait_empty(min(0.1, max(0.0, deadline - time.monotonic())))
        left = [h for h in self.lanes.events() if not h.released]
        await self.lanes.cancel()
        await self._release(left)
        log.info("drained", extra={"released_running": len(left)})

    async def close(self) -> None:
        """Stop everything and leave the membership (after :meth:`drain`, or abruptly without)."""
        await cancel_and_wait(self._tasks)
        self._tasks = []
        await self._stop_pulling()
        if self.lanes is not None:
            await self.lanes.cancel()
        if self._registry is not None and self._nc is not None and self._nc.is_connected:
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                await self._registry.leave()
        if self._store is not None:
            await self._store.close()
        if self._nc is not None and not self._nc.is_closed:
            with contextlib.suppress(nats.errors.Error):
                await self._nc.drain()
        if self._mongo is not None:
            await self._mongo.close()
        log.info("processor stopped", extra={"member": self.member_id})
