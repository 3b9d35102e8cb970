"""The load loop: workers that send events at a target rate (or as fast as the server answers),
counters and latencies, live progress, then waiting for processing and verification."""

from __future__ import annotations

import asyncio
import contextlib
import random
import resource
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable

import msgspec

from ._http import Connection, HttpError, parse_target
from .events import EventFactory, event_id_of
from .observe import Observer, Sample
from .plan import owned_patients, slot_due
from .verify import SentEvent, Verification, verify

__all__ = ["LoadResult", "LoadSpec", "run_load"]

_HEADERS = b"Content-Type: application/json\r\n"


class LoadSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What to send. Stops at ``count`` requests or after ``duration_s``, whichever comes first."""

    url: str  # ingest base URL, http://host:port
    rate: float | None = None  # requests per second; None = as fast as the server answers
    duration_s: float | None = None
    count: int | None = None
    patients: int = 1000
    duplicates: float = 0.0  # share of requests that resend the patient's previous event
    payload_bytes: int = 256  # approximate body size
    concurrency: int = 32  # connections, each one request at a time
    timeout_s: float = 30.0  # per request
    run_id: str = ""  # makes patient ids unique to the run; random when empty
    path: str = "/events"
    auth_token: str = ""  # bearer token when ingest has auth on
    nats_url: str | None = None  # for lag and processor count
    mongo_uri: str | None = None  # for processed count and verification
    mongo_db: str = ""  # database name when not the URI's path
    wait_s: float = 120.0  # how long to wait for processing after sending
    verify: bool = True
    seed: int = 1

    def __post_init__(self) -> None:
        if self.count is None and self.duration_s is None:
            raise ValueError("give a count or a duration")
        if self.rate is not None and self.rate <= 0:
            raise ValueError("rate must be positive")
        if not 0 <= self.duplicates < 1:
            raise ValueError("duplicates must be in [0, 1)")
        if self.concurrency < 1 or self.patients < 1:
            raise ValueError("concurrency and patients must be at least 1")


class _Answer(msgspec.Struct):
    eventId: str = ""
    duplicate: bool = False


_decode_answer = msgspec.json.Decoder(_Answer).decode


class LoadResult(msgspec.Struct):
    """Everything measured in one run (latencies in seconds; see ``report`` for the summary)."""

    spec: LoadSpec
    run_id: str
    started_at: float  # wall clock
    send_s: float  # seconds spent sending
    sent: int = 0  # requests, duplicates included
    accepted: int = 0  # 202 for a new event
    duplicates: int = 0  # 202 marked duplicate
    errors: dict[str, int] = msgspec.field(default_factory=dict)
    accept_latency_s: list[float] = msgspec.field(default_factory=list)
    scheduled_latency_s: list[float] = msgspec.field(default_factory=list)  # from the planned send time
    e2e_latency_s: list[float] = msgspec.field(default_factory=list)
    samples: list[Sample] = msgspec.field(default_factory=list)
    client_cpu_s: float = 0.0  # CPU seconds the generator itself used while sending
    wait_s: float = 0.0  # seconds waited for processing
    processing_done: bool | None = None  # None: not observed
    verification: Verification | None = None
    last_processed_at: float | None = None  # wall clock of the last processing, if verified


class _Run:
    def __init__(self, spec: LoadSpec, progress: Callable[[str], None] | None) -> None:
        self.spec = spec
        self.run_id = spec.run_id or uuid.uuid4().hex[:8]
        self.factory = EventFactory(self.run_id, spec.patients, spec.payload_bytes)
        self.target = parse_target(spec.url)
        self.path = spec.path.encode()
        self.headers = _HEADERS + (
            f"Authorization: Bearer {spec.auth_token}\r\n".encode() if spec.auth_token else b""
        )
        self.progress = progress
        self.sent_events: dict[str, SentEvent] = {}
        self.errors: Counter[str] = Counter()
        self.accept: list[float] = []
        self.scheduled: list[float] = []
        self.sent = self.accepted = self.duplicates = 0
        self.next_slot = 0
        self.t0 = 0.0
        self.wall0 = 0.0
        self.end = float("inf")
        self.sent_until: float | None = None  # when sending finished

    def take_slot(self) -> int | None:
        slot = self.next_slot
        if self.spec.count is not None and slot >= self.spec.count:
            return None
        if time.monotonic() >= self.end:
            return None
        self.next_slot += 1
        return slot

    async def worker(self, index: int, workers: int) -> None:
        rng = random.Random(self.spec.seed * 1_000_003 + index)
        mine = owned_patients(index, workers, self.spec.patients)
        next_seq = dict.fromkeys(mine, 0)
        last: dict[int, bytes] = {}
        connection = Connection(self.target, self.spec.timeout_s)
        turn = 0
        try:
            while (slot := self.take_slot()) is not None:
                due = slot_due(slot, self.spec.rate, self.t0)
                if due > (now := time.monotonic()):
                    await asyncio.sleep(due - now)
                patient = mine[turn % len(mine)]
                turn += 1
                previous = last.get(patient)
                if previous is not None and rng.random() < self.spec.duplicates:
                    await self.send(connection, patient, previous, next_seq[patient] - 1, due)
                    continue
                body = self.factory.body(patient, next_seq[patient])
                await self.send(connection, patient, body, next_seq[patient], due)
                last[patient] = body
                next_seq[patient] += 1
        finally:
            connection.close()

    async def send(self, connection: Connection, patient: int, body: bytes, seq: int, due: float) -> None:
        self.sent += 1
        started = time.monotonic()
        wall = self.wall0 + (started - self.t0)
        try:
            response = await connection.request(b"POST", self.path, body, self.headers)
        except HttpError as exc:
            self.errors[exc.kind] += 1
            self._uncertain(patient, body, seq, wall)
            return
        done = time.monotonic()
        if response.status != 202:
            self.errors[f"http_{response.status}"] += 1
            self._uncertain(patient, body, seq, wall)
            return
        self.accept.append(done - started)
        if self.spec.rate is not None:
            self.scheduled.append(done - min(due, started))
        answer = _decode_answer(response.body)
        known = self.sent_events.get(answer.eventId)
        if answer.duplicate:
            self.duplicates += 1
        else:
            self.accepted += 1
        if known is None or not known.accepted:
            sent_at = known.sent_at if known is not None else wall
            self.sent_events[answer.eventId] = SentEvent(self.factory.patient_id(patient), seq, sent_at, True)

    def _uncertain(self, patient: int, body: bytes, seq: int, wall: float) -> None:
        event_id = event_id_of(body)
        if event_id not in self.sent_events:
            self.sent_events[event_id] = SentEvent(self.factory.patient_id(patient), seq, wall, False)

    def line(self, sample: Sample | None) -> str:
        elapsed = (self.sent_until or time.monotonic()) - self.t0
        rate = self.sent / elapsed if elapsed > 0 else 0.0
        errors = sum(self.errors.values())
        text = (
            f"{elapsed:6.1f}s sent {self.sent:,} accepted {self.accepted:,} duplicates {self.duplicates:,} "
            f"errors {errors:,} ({rate:,.0f}/s)"
        )
        if sample is not None:
            text += (
                f" | processed {_n(sample.processed)} lag {_n(sample.lag)} processors {_n(sample.processors)}"
            )
        return text


def _n(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


async def _observe(run: _Run, observer: Observer, samples: list[Sample], stop: asyncio.Event) -> None:
    while not stop.is_set():
        sample = await observer.sample(time.monotonic() - run.t0, run.sent, run.accepted)
        samples.append(sample)
        if run.progress is not None and run.sent_until is None:  # afterwards the wait reports
            run.progress(run.line(sample))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


async def run_load(spec: LoadSpec, progress: Callable[[str], None] | None = None) -> LoadResult:
    """Send the load ``spec`` describes, wait for processing, verify, and return what was measured."""
    run = _Run(spec, progress)
    observer = Observer(spec.nats_url, spec.mongo_uri, spec.mongo_db)
    await observer.start()
    samples: list[Sample] = []
    try:
        workers = min(spec.concurrency, spec.patients)
        run.t0, run.wall0 = time.monotonic(), time.time()
        if spec.duration_s is not None:
            run.end = run.t0 + spec.duration_s
        cpu0 = _cpu()
        stop = asyncio.Event()
        watcher = asyncio.create_task(_observe(run, observer, samples, stop))
        try:
            await asyncio.gather(*(run.worker(i, workers) for i in range(workers)))
            run.sent_until = time.monotonic()
            send_s = run.sent_until - run.t0
            cpu = _cpu() - cpu0
            result = LoadResult(
                spec=spec,
                run_id=run.run_id,
                started_at=run.wall0,
                send_s=send_s,
                sent=run.sent,
                accepted=run.accepted,
                duplicates=run.duplicates,
                errors=dict(run.errors),
                accept_latency_s=run.accept,
                scheduled_latency_s=run.scheduled,
                samples=samples,
                client_cpu_s=cpu,
            )
            if observer.can_verify and spec.verify:
                result.processing_done = await _wait_processed(run, observer, spec.wait_s)
                result.wait_s = time.monotonic() - run.t0 - send_s
        finally:
            stop.set()
            await watcher
        if observer.can_verify and spec.verify:
            samples.append(await observer.sample(time.monotonic() - run.t0, run.sent, run.accepted))
            patients = [run.factory.patient_id(p) for p in range(spec.patients)]
            docs = await observer.documents(patients)
            result.verification, result.e2e_latency_s = verify(run.sent_events, docs)
            times = [d.processed_at for d in docs if d.processed_at is not None]
            result.last_processed_at = max(times) if times else None
        return result
    finally:
        await observer.close()


async def _wait_processed(run: _Run, observer: Observer, timeout: float) -> bool:
    """Until as many documents as accepted events are stored and the stream is empty. The stream
    is watched first (cheap); MongoDB counts the documents once it says everything is done."""
    expected = sum(1 for e in run.sent_events.values() if e.accepted)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        processed, lag = await observer.processed(), await observer.lag()
        if run.progress is not None:
            run.progress(f"waiting for processing: {_n(processed)} of {expected:,} stored, lag {_n(lag)}")
        if processed is not None and processed >= expected and not lag:
            stored = await observer.stored()
            if stored is None or stored >= expected:
                return True
        await asyncio.sleep(0.5)
    return False


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def tty_progress() -> Callable[[str], None] | None:
    """A progress printer that rewrites one stderr line, or ``None`` when stderr is no terminal."""
    if not sys.stderr.isatty():
        return None

    def show(text: str) -> None:
        sys.stderr.write("\r\x1b[2K" + text)
        sys.stderr.flush()

    return show
