"""Patient lanes: each patient's held events run strictly one after another, patients in parallel,
and the pod holds at most ``capacity`` events (fetching stops while it is full: back-pressure).

A lane is ordered by stream sequence, not by arrival: redeliveries after a crash can arrive after
newer events (FINDINGS.md), and the lowest sequence is the one the fence will let through first.
"""

from __future__ import annotations

import asyncio
import enum
import heapq
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

from nats.aio.msg import Msg
from opentelemetry.trace import Span

from ._tasks import cancel_and_wait

__all__ = ["Capacity", "HeldEvent", "LaneStep", "PatientLanes"]

log = logging.getLogger("medevents.processor")


@dataclass(eq=False)
class HeldEvent:
    """One delivered message this pod holds until it is acknowledged, released or abandoned."""

    msg: Msg
    sequence: int  # stream sequence
    subject: str  # stored subject events.<partition>.<token>: the fence looks up by it
    token: str  # patient token: the lane key and the watermark's id
    partition: int
    delivered: int  # JetStream delivery count of the latest delivery
    accepted_at: float  # unix seconds the stream stored it (end-to-end latency)
    last_beat: float = field(default_factory=time.monotonic)  # delivery or last sent heartbeat
    running: bool = False  # its lane is working on it (fence, handler or write)
    expired: bool = False  # heartbeats lapsed: JetStream may have handed it to another pod
    released: bool = False  # acked, NAKed or abandoned: no more heartbeats
    gone_seen: bool = False  # the fence found it missing from the stream once
    fence_waits: int = 0  # times the fence said "wait" (an earlier event of the patient pending)
    span: Span | None = None  # "process EVENTS" while tracing is on (see _tracing)
    wait_span: Span | None = None  # "wait for turn" until the fence lets it through


class LaneStep(enum.Enum):
    DONE = "done"  # finished with it (acked, released or abandoned): remove it from the lane
    WAIT = "wait"  # not its turn yet: keep it at the head and look again later


Step = Callable[[HeldEvent], Awaitable[LaneStep]]


class Capacity:
    """How many events the pod may hold; pull loops reserve slots before fetching."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0  # held plus reserved
        self._freed = asyncio.Event()

    async def reserve(self, at_most: int) -> int:
        """Wait for a free slot, then take up to ``at_most`` of the free ones."""
        while self.used >= self.limit:
            self._freed.clear()
            await self._freed.wait()
        n = max(1, min(at_most, self.limit - self.used))
        self.used += n
        return n

    def force(self, n: int) -> int:
        """Take ``n`` slots beyond the limit (to break a stall; see the pull loop)."""
        self.used += n
        return n

    def give_back(self, n: int) -> None:
        if n > 0:
            self.used -= n
            self._freed.set()

    def set_limit(self, limit: int) -> None:
        self.limit = limit
        self._freed.set()


class _Lane:
    def __init__(self, token: str) -> None:
        self.token = token
        self.heap: list[tuple[int, HeldEvent]] = []
        self.by_seq: dict[int, HeldEvent] = {}
        self.changed = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.progress_at = time.monotonic()  # created, or an event last left it


class PatientLanes:
    """Per-patient FIFO (by stream sequence) with one runner task per non-empty lane."""

    def __init__(
        self,
        step: Step,
        capacity: Capacity,
        *,
        wait_initial_s: float = 0.02,
        wait_max_s: float = 1.0,
        on_change: Callable[[], None] | None = None,
        on_crash: Callable[[BaseException], None] | None = None,
    ) -> None:
        self._step = step
        self._capacity = capacity
        self._lanes: dict[str, _Lane] = {}
        self._wait_initial = wait_initial_s
        self._wait_max = wait_max_s
        self._on_change = on_change
        self._on_crash = on_crash
        self._paused = False
        self.held = 0
        self.last_progress = time.monotonic()  # when an event last left a lane
        self.active = 0  # lanes working on their head event now (not waiting for its turn)

    def stalled(self, for_s: float) -> bool:
        """Every held event waits for its turn and none has finished for ``for_s`` seconds."""
        return self.held > 0 and self.active == 0 and time.monotonic() - self.last_progress > for_s

    def __len__(self) -> int:
        return len(self._lanes)

    def longest_stuck(self) -> float:
        """Seconds the slowest lane has gone without an event leaving it: a patient whose next
        event waits at the fence, retries or runs that long (0 with no lanes)."""
        if not self._lanes:
            return 0.0
        return time.monotonic() - min(lane.progress_at for lane in self._lanes.values())

    def events(self) -> Iterator[HeldEvent]:
        """Every held event (for heartbeats and shutdown)."""
        for lane in list(self._lanes.values()):
            yield from list(lane.by_seq.values())

    def admit(self, held: HeldEvent) -> bool:
        """Queue a delivered message in its patient's lane; its capacity slot must be reserved.

        A redelivery of a message already held here refreshes it (newest delivery, heartbeat
        clock reset) and returns False: the caller gives the reserved slot back.
        """
        lane = self._lanes.get(held.token)
        if lane is None:
            lane = self._lanes[held.token] = _Lane(held.token)
        existing = lane.by_seq.get(held.sequence)
        if existing is not None:
            existing.msg, existing.delivered = held.msg, held.delivered
            if not existing.running:
                existing.last_beat, existing.expired = held.last_beat, False
            return False
        lane.by_seq[held.sequence] = held
        heapq.heappush(lane.heap, (held.sequence, held))
        self.held += 1
        lane.changed.set()
        if lane.task is None:
            lane.task = asyncio.create_task(self._run(lane), name=f"lane-{held.partition}")
        self._changed()
        return True

    def _remove(self, lane: _Lane, held: HeldEvent) -> None:
        held.released = True
        if lane.by_seq.pop(held.sequence, None) is held:
            if lane.heap and lane.heap[0][1] is held:
                heapq.heappop(lane.heap)
            else:
                lane.heap = [(s, h) for s, h in lane.heap if h is not held]
                heapq.heapify(lane.heap)
            self.held -= 1
            self.last_progress = lane.progress_at = time.monotonic()
            self._capacity.give_back(1)

    def pause(self) -> None:
        """Start no further event (shutdown): those under way finish, the rest stay queued."""
        self._paused = True

    def take_queued(self) -> list[HeldEvent]:
        """Remove and return every held event that is not running (to release them on shutdown)."""
        out = []
        for lane in list(self._lanes.values()):
            for held in list(lane.by_seq.values()):
                if not held.running:
                    self._remove(lane, held)
                    out.append(held)
            lane.changed.set()
        self._changed()
        return out

    async def _run(self, lane: _Lane) -> None:
        wait = self._wait_initial
        try:
            while lane.heap:
                _, held = lane.heap[0]
                lane.changed.clear()
                if self._paused:
                    await lane.changed.wait()  # until take_queued empties the lane
                    continue
                held.running = True
                self.active += 1
                try:
                    step = await self._step(held)
                finally:
                    held.running = False
                    self.active -= 1
                if step is LaneStep.DONE:
                    self._remove(lane, held)
                    self._changed()
                    wait = self._wait_initial
                    continue
                # Not its turn: sleep until something changes in the lane or the back-off ends.
                try:
                    async with asyncio.timeout(wait):
                        await lane.changed.wait()
                    wait = self._wait_initial
                except TimeoutError:
                    wait = min(self._wait_max, wait * 2)
        except Exception as exc:  # a bug, not an outage: report it so the process stops loudly
            log.exception(
                "patient lane crashed", extra={"partition": lane.heap[0][1].partition if lane.heap else None}
            )
            if self._on_crash is not None:
                self._on_crash(exc)
            raise
        finally:
            if self._lanes.get(lane.token) is lane:
                if lane.heap:  # cancelled with events left: release their slots
                    for held in list(lane.by_seq.values()):
                        self._remove(lane, held)
                del self._lanes[lane.token]
            self._changed()

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()

    async def wait_empty(self, timeout: float) -> bool:
        """Wait until no lane runs or ``timeout`` passes; True when empty."""
        deadline = time.monotonic() + timeout
        while self._lanes and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return not self._lanes

    async def cancel(self) -> None:
        await cancel_and_wait(lane.task for lane in list(self._lanes.values()) if lane.task is not None)
