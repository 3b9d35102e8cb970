"""The production topology on one machine, driven through faults: a 3-node JetStream cluster
(R3 stream), ingest and processors as real processes, a client that retries every 503 with the
same event, and a watch that samples what an operator would look at (stream leader, ingest
readiness, the backlog reader, ``medevents status``) while a node is killed or restarted.

:func:`run_fault` runs one fault and returns a :class:`FaultRun` with everything measured; the
tests assert on it. Times are wall-clock seconds (``time.time()``): the processors stamp their
documents with wall-clock times too.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import signal
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
import nats.errors
from integration.processor_procs import ProcessorFleet
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from pymongo import AsyncMongoClient

from medevents import store, topology
from medevents.backlog import Backlog, read_backlog
from medevents.cluster import Member, owned_partitions
from medevents.config import MongoSettings, NatsSettings
from medevents.loadgen._http import Connection, HttpError, parse_target
from medevents.loadgen.events import EventFactory, event_id_of
from medevents.loadgen.observe import Observer
from medevents.loadgen.verify import SentEvent, StoredEvent, Verification, verify
from medevents.local import Child, EmbeddedNatsCluster, free_port, spawn
from medevents.status import collect
from medevents.store import Document
from medevents.subjects import partition_of, patient_token

PARTITIONS = 8
REPLICAS = 3
PROBE_TIMEOUT_S = 3.0  # the chart's readinessProbe.timeoutSeconds for ingest


def system_env(cluster: EmbeddedNatsCluster, mongo: MongoSettings) -> dict[str, str]:
    """Settings every component of the run shares (production defaults otherwise)."""
    return {
        "NATS_URL": cluster.url,
        "MONGO_URI": mongo.uri,
        "MONGO_DB": mongo.database,
        "MEDEVENTS_PARTITIONS": str(PARTITIONS),
        "MEDEVENTS_STREAM_REPLICAS": str(REPLICAS),
        "LOG_LEVEL": "INFO",
    }


class IngestProcess:
    """``medevents ingest`` as a child process."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / "ingest.log"
        command = [str(Path(sys.executable).parent / "medevents"), "ingest"]
        self.child: Child = spawn(
            "ingest", command, env={**env, "PORT": str(self.port), "HOST": "127.0.0.1"}, log_path=self.log
        )

    async def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(base_url=self.url, timeout=3) as client:
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/readyz")).status_code == 200:
                        return
                assert self.child.alive(), f"ingest exited: {self.tail()}"
                assert time.monotonic() < deadline, f"ingest not ready: {self.tail()}"
                await asyncio.sleep(0.2)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


# -- load -------------------------------------------------------------------------------------


@dataclass
class SentRecord:
    patient: str
    n: int  # the patient's event number, in sending order
    first_try: float
    accepted_at: float | None = None  # first 202
    failures: list[float] = field(default_factory=list)  # times of 503s and lost answers


class Load:
    """Each patient sends its events one after another at ``rate`` per second and retries a 503
    or a lost answer with the same body (the same event id) until it gets a 202, as the README
    tells clients to."""

    def __init__(self, url: str, *, patients_per_partition: int = 3, rate_per_patient: float = 5.0) -> None:
        self.url = url
        self.factory = EventFactory(os.urandom(4).hex(), 10_000)
        self.rate = rate_per_patient
        per: dict[int, list[int]] = defaultdict(list)
        index = 0
        while any(len(per[p]) < patients_per_partition for p in range(PARTITIONS)):
            p = partition_of(patient_token(self.factory.patient_id(index)), PARTITIONS)
            if len(per[p]) < patients_per_partition:
                per[p].append(index)
            index += 1
        self.patients = sorted(i for ids in per.values() for i in ids)
        self.partition = {self.factory.patient_id(i): p for p, ids in per.items() for i in ids}
        self.records: dict[str, SentRecord] = {}
        self.answers: list[tuple[float, int]] = []  # (time, HTTP status; 0 = no answer)
        self.stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._patient(i)) for i in self.patients]

    async def finish(self) -> None:
        """Stop sending new events; events under way are retried until accepted (bounded)."""
        self.stop.set()
        await asyncio.wait_for(asyncio.gather(*self._tasks), 60)

    async def _patient(self, index: int) -> None:
        connection = Connection(parse_target(self.url), timeout=10.0)
        patient = self.factory.patient_id(index)
        n = 0
        next_due = time.monotonic()
        try:
            while not self.stop.is_set():
                body = self.factory.body(index, n)
                event_id = event_id_of(body)
                record = self.records[event_id] = SentRecord(patient, n, time.time())
                while True:
                    try:
                        response = await connection.request(
                            b"POST", b"/events", body, b"Content-Type: application/json\r\n"
                        )
                        status = response.status
                    except HttpError:
                        status = 0
                    now = time.time()
                    self.answers.append((now, status))
                    if status == 202:
                        record.accepted_at = now
                        break
                    assert status in (0, 503), f"unexpected answer {status}"
                    record.failures.append(now)
                    await asyncio.sleep(0.2)
                n += 1
                next_due += 1 / self.rate
                await asyncio.sleep(max(0.0, next_due - time.monotonic()))
        finally:
            connection.close()

    def sent(self) -> dict[str, SentEvent]:
        return {
            event_id: SentEvent(r.patient, r.n, r.first_try, r.accepted_at is not None)
            for event_id, r in self.records.items()
        }

    @property
    def accepted(self) -> int:
        return sum(r.accepted_at is not None for r in self.records.values())

    def unavailable_windows(self, after: float) -> list[tuple[float, float]]:
        """Intervals, after ``after``, from a failed answer to the next 202 (publishing failed)."""
        windows: list[tuple[float, float]] = []
        start: float | None = None
        for t, status in sorted(self.answers):
            if t < after:
                continue
            if status != 202 and start is None:
                start = t
            elif status == 202 and start is not None:
                windows.append((start, t))
                start = None
        if start is not None:
            windows.append((start, time.time()))
        return windows


# -- watching ---------------------------------------------------------------------------------


@dataclass
class Watch:
    """What an operator sees, sampled while the fault runs."""

    leaders: list[tuple[float, str | None]] = field(default_factory=list)  # stream leader
    readyz: list[tuple[float, int, float]] = field(default_factory=list)  # (t, status; 0 = none, took)
    not_ready: dict[float, str] = field(default_factory=dict)  # time -> the 503's body
    backlog: list[tuple[float, float, Backlog | str]] = field(default_factory=list)  # error name
    status: list[tuple[float, float, dict[str, Any] | str]] = field(default_factory=list)


async def _sample_leader(js: JetStreamContext, watch: Watch, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            info = await js.stream_info(topology.STREAM)
            leader = info.cluster.leader if info.cluster else None
        except (nats.errors.Error, TimeoutError):
            leader = None
        watch.leaders.append((time.time(), leader or None))
        await _pause(stop, 0.1)


async def _sample_readyz(url: str, watch: Watch, stop: asyncio.Event) -> None:
    connection = Connection(parse_target(url), timeout=PROBE_TIMEOUT_S)
    try:
        while not stop.is_set():
            started = time.monotonic()
            try:
                response = await connection.request(b"GET", b"/readyz")
                status = response.status
                if status != 200:
                    watch.not_ready[time.time()] = response.body.decode("utf-8", "replace")
            except HttpError:
                status = 0
            watch.readyz.append((time.time(), status, time.monotonic() - started))
            await _pause(stop, 0.25)
    finally:
        connection.close()


async def _sample_backlog(js: JetStreamContext, watch: Watch, stop: asyncio.Event) -> None:
    while not stop.is_set():
        started = time.monotonic()
        try:
            # As the operator reads: with the partition count it knew, for when the stream is silent.
            result: Backlog | str = await read_backlog(js, partitions=PARTITIONS)
        except Exception as exc:  # every failure is recorded; the test asserts there are none
            result = type(exc).__name__
        watch.backlog.append((time.time(), time.monotonic() - started, result))
        await _pause(stop, 0.5)


async def _sample_status(settings: NatsSettings, data_dir: Path, watch: Watch, stop: asyncio.Event) -> None:
    while not stop.is_set():
        started = time.monotonic()
        try:
            result: dict[str, Any] | str = await collect(settings, data_dir, interval_s=0.5)
        except Exception as exc:  # recorded; the test asserts there are none
            result = type(exc).__name__
        watch.status.append((time.time(), time.monotonic() - started, result))
        await _pause(stop, 1.0)


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


# -- the system and one fault ---------------------------------------------------------------------


@dataclass
class ClusterSystem:
    tmp: Path
    cluster: EmbeddedNatsCluster
    mongo: MongoSettings
    ingest: IngestProcess
    fleet: ProcessorFleet
    nc: NATS  # the test's own connection (every node's URL)

    @property
    def js(self) -> JetStreamContext:
        return self.nc.jetstream(timeout=1.0)

    async def stream_leader(self) -> str:
        info = await self.js.stream_info(topology.STREAM)
        assert info.cluster is not None and info.cluster.leader
        return info.cluster.leader

    async def consumer_leaders(self) -> dict[int, str | None]:
        out: dict[int, str | None] = {}
        for p in range(PARTITIONS):
            try:
                info = await self.js.consumer_info(topology.STREAM, topology.consumer_name(p), timeout=1.0)
                out[p] = (info.cluster.leader if info.cluster else None) or None
            except (nats.errors.Error, TimeoutError):
                out[p] = None
        return out

    async def wait_all_led(self, timeout: float = 60.0) -> None:
        """Until the stream and every partition consumer have a leader."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(nats.errors.Error, TimeoutError, AssertionError):
                await self.stream_leader()
                if all((await self.consumer_leaders()).values()):
                    return
            assert time.monotonic() < deadline, "stream or consumers without a leader"
            await asyncio.sleep(0.2)

    def processes_alive(self) -> dict[str, bool]:
        alive = {"ingest": self.ingest.child.alive()}
        alive |= {name: child.alive() for name, (child, _) in self.fleet.children.items()}
        return alive

    def logs(self) -> dict[str, str]:
        out = {"ingest": self.ingest.log.read_text(errors="replace")}
        out |= {name: (self.tmp / f"{name}.log").read_text(errors="replace") for name in self.fleet.children}
        return out

    def pause_processors(self) -> None:
        for child, _ in self.fleet.children.values():
            child.signal(signal.SIGSTOP)

    def resume_processors(self) -> None:
        for child, _ in self.fleet.children.values():
            child.signal(signal.SIGCONT)


def balanced_members(n: int) -> list[str]:
    """``n`` member ids that rendezvous hashing gives equal shares of the partitions (ids are
    fixed, so a lopsided pair would make every run lopsided: 7 partitions to 1 with the first)."""
    for attempt in range(1000):
        ids = [f"cluster-{attempt}-{i}" for i in range(n)]
        members = [Member(m, m, 0, 1, [], 0.0) for m in ids]
        shares = [len(owned_partitions(m, members, PARTITIONS)) for m in ids]
        if max(shares) - min(shares) <= 1:
            return ids
    raise AssertionError("no balanced member ids")


@contextlib.asynccontextmanager
async def cluster_system(
    tmp: Path, cluster: EmbeddedNatsCluster, mongo: MongoSettings, processors: int = 2
) -> AsyncIterator[ClusterSystem]:
    """Ingest and ``processors`` processor processes on ``cluster``, started together."""
    env = system_env(cluster, mongo)
    fleet = ProcessorFleet(
        tmp,
        cluster.url,
        mongo,
        (2, 10),  # not used: the default handler below simulates 2-10 ms of work
        **{
            **env,
            "PROCESSOR_HANDLER": "medevents.processor.handlers:simulate",
            "PROCESSOR_DELAY_MIN_MS": "2",
            "PROCESSOR_DELAY_MAX_MS": "10",
            "PROCESSOR_ACK_WAIT_S": "30",  # the default: a lost ack shows as lag for this long
            "PROCESSOR_RETRY_INITIAL_MS": "100",
            "PROCESSOR_RETRY_MAX_MS": "10000",
            "PROCESSOR_MEMBER_TTL_S": "3",
        },
    )
    nc = await nats.connect(cluster.url.split(","), max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    ingest = IngestProcess(tmp, env)
    try:
        await ingest.wait_ready()
        for i, member in enumerate(balanced_members(processors)):
            # Each processor on a node of its own (nats-py connects to the first URL it is given,
            # and learns the others for reconnecting), so one lost node never cuts them all off.
            fleet.env["NATS_URL"] = cluster.nodes[i % len(cluster.nodes)].url
            fleet.start(member)
        await asyncio.to_thread(fleet.wait_ready, 60.0)
        system = ClusterSystem(tmp, cluster, mongo, ingest, fleet, nc)
        await system.wait_all_led()
        yield system
    finally:
        await nc.close()
        fleet.stop_all()
        ingest.child.stop(20)


@dataclass(frozen=True)
class Fault:
    """One fault: ``act`` hits the cluster and returns the nodes it left stopped, which the
    harness starts again ``restart_after_s`` later (as a supervisor would)."""

    name: str
    act: Callable[[ClusterSystem], Awaitable[list[str]]]
    restart_after_s: float = 8.0
    single_handover: bool = True  # one node lost once: the stall bound applies


@dataclass
class FaultRun:
    """Everything one fault run measured."""

    fault: Fault
    killed: list[str]  # the nodes the fault stopped
    fault_at: float
    recovered_at: float  # the watch saw a stream leader on a live node again
    leaders_before: dict[int, str | None]
    leaders_after: dict[int, str | None]
    watch: Watch
    load: Load
    verification: Verification
    all_stored_at: float | None  # when MongoDB held every accepted event
    true_lag_at: float | None  # when the backlog reader first read lag 0 after that
    stalls: dict[int, float]  # partition -> longest wait of a runnable event after the fault
    stalled: dict[int, dict[str, Any]]  # partition -> that event (for a failing test's message)
    baseline_stall: float  # the same before the fault: what this machine adds without a fault
    alive: dict[str, bool]
    logs: dict[str, str]

    @property
    def election_s(self) -> float:
        """From the fault to a stream leader on a live node, as the watch saw it."""
        return self.recovered_at - self.fault_at

    @property
    def led_again_at(self) -> float:
        """After the fault, when a backlog read first got every consumer and the stream through
        a leader (the consumers' elections are over too)."""
        return min(
            (
                t
                for t, _, b in self.watch.backlog
                if t >= self.recovered_at and isinstance(b, Backlog) and b.complete
            ),
            default=float("inf"),
        )

    def cut_off(self) -> set[int]:
        """Partitions a processor was pulling when its own NATS connection was lost.

        Messages a consumer leader had delivered towards it that were still in the lost node's
        buffers are gone, and JetStream redelivers them only after the ack wait: that is NATS's
        delivery guarantee, not something a processor can shorten (only a shorter ack wait does).
        The stall bounds apply to the other partitions."""
        out: set[int] = set()
        for name, text in self.logs.items():
            if not name.startswith("processor-"):
                continue
            owned: list[int] = []
            for line in text.splitlines():
                if '"owned":' in line:
                    owned = msgspec.json.decode(line).get("owned", [])
                elif '"nats disconnected"' in line:
                    out.update(owned)
        return out

    def unmoved(self) -> list[int]:
        """Partitions whose consumer leader was not on a stopped node and did not move, pulled by
        processors that kept their connection."""
        return [
            p
            for p, leader in self.leaders_before.items()
            if leader is not None
            and leader not in self.killed
            and self.leaders_after.get(p) == leader
            and p not in self.cut_off()
        ]

    def summary(self) -> dict[str, Any]:
        windows = self.load.unavailable_windows(self.fault_at - 1)
        ready = [(t, status) for t, status, _ in self.watch.readyz if t >= self.fault_at]
        not_ready = [t for t, status in ready if status != 200]
        return {
            "fault": self.fault.name,
            "killed": self.killed,
            "election_s": round(self.election_s, 2),
            "publish_unavailable_s": [round(b - a, 2) for a, b in windows],
            "readiness_false_s": round(max(not_ready) - min(not_ready), 2) if not_ready else 0.0,
            "all_led_after_s": round(self.led_again_at - self.fault_at, 2),
            "lag_zero_after_all_led_s": None
            if self.true_lag_at is None
            else round(self.true_lag_at - self.led_again_at, 2),
            "lag_zero_after_all_stored_s": None
            if self.true_lag_at is None or self.all_stored_at is None
            else round(self.true_lag_at - self.all_stored_at, 2),
            "stalls_s": {p: round(s, 2) for p, s in sorted(self.stalls.items())},
            "unmoved_partitions": self.unmoved(),
            "cut_off_partitions": sorted(self.cut_off()),
            "baseline_stall_s": round(self.baseline_stall, 2),
            "accepted": self.load.accepted,
            "retried_events": sum(bool(r.failures) for r in self.load.records.values()),
        }


async def run_fault(
    system: ClusterSystem, fault: Fault, *, warmup_s: float = 4.0, backlog_s: float = 1.5
) -> FaultRun:
    """Load with retries; then ``fault``, with a backlog in every partition (the processors are
    paused for ``backlog_s`` just before it, and resumed at once after it); the stopped nodes
    started again; then wait until every accepted event is stored and the lag reads zero."""
    load = Load(system.ingest.url)
    watch = Watch()
    stop = asyncio.Event()
    status_dir = system.tmp / "status"
    status_dir.mkdir(exist_ok=True)
    settings = NatsSettings(url=system.cluster.url)
    load.start()
    watchers = [
        asyncio.create_task(_sample_leader(system.nc.jetstream(timeout=0.5), watch, stop)),
        asyncio.create_task(_sample_readyz(system.ingest.url, watch, stop)),
        asyncio.create_task(_sample_backlog(system.nc.jetstream(), watch, stop)),
        asyncio.create_task(_sample_status(settings, status_dir, watch, stop)),
    ]
    restarter: asyncio.Task[None] | None = None
    try:
        await asyncio.sleep(warmup_s)
        leaders_before = await system.consumer_leaders()
        baseline_until = time.time()
        system.pause_processors()
        await asyncio.sleep(backlog_s)
        fault_at = time.time()
        try:
            killed = await fault.act(system)
        finally:
            system.resume_processors()
        restarter = asyncio.create_task(_restart_later(system, killed, fault.restart_after_s))
        recovered_at = await _wait_leader_again(watch, fault_at, killed)
        await restarter
        await system.wait_all_led()
        await asyncio.sleep(2.0)
        await load.finish()
        all_stored_at, true_lag_at = await _wait_drained(system, load, watch)
        await asyncio.sleep(0.5)  # anything stored twice would show now
    finally:
        stop.set()
        await asyncio.gather(*watchers)
        if restarter is not None and not restarter.done():
            restarter.cancel()
        if not load.stop.is_set():
            load.stop.set()
            await asyncio.gather(*load._tasks, return_exceptions=True)
    leaders_after = await system.consumer_leaders()
    docs = await _documents(system.mongo, load)
    verification, _ = verify(load.sent(), docs)
    raw = await _raw_documents(system.mongo, load)
    baseline = _stalls(raw, load, since=baseline_until - warmup_s + 1.0, until=baseline_until)
    after = _stalls(raw, load, since=fault_at, until=None)
    return FaultRun(
        fault=fault,
        killed=killed,
        fault_at=fault_at,
        recovered_at=recovered_at,
        leaders_before=leaders_before,
        leaders_after=leaders_after,
        watch=watch,
        load=load,
        verification=verification,
        all_stored_at=all_stored_at,
        true_lag_at=true_lag_at,
        stalls={p: seconds for p, (seconds, _) in after.items()},
        stalled={p: _stalled(doc, load, fault_at) for p, (_, doc) in after.items()},
        baseline_stall=max((seconds for seconds, _ in baseline.values()), default=0.0),
        alive=system.processes_alive(),
        logs=system.logs(),
    )


async def _restart_later(system: ClusterSystem, names: list[str], after_s: float) -> None:
    await asyncio.sleep(after_s)
    for name in names:
        await asyncio.to_thread(system.cluster.restart, name)


async def _wait_leader_again(
    watch: Watch, fault_at: float, killed: list[str], timeout: float = 90.0
) -> float:
    """When the watch first saw, after the fault, a stream leader that is not a stopped node."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for t, leader in watch.leaders:
            if t >= fault_at and leader is not None and leader not in killed:
                return t
        await asyncio.sleep(0.1)
    raise AssertionError("the stream got no leader again")


async def _wait_drained(system: ClusterSystem, load: Load, watch: Watch) -> tuple[float | None, float | None]:
    """When MongoDB held every accepted event, and when the backlog read zero after that."""
    client: AsyncMongoClient[Document] = store.mongo_client(system.mongo, "cluster-test")
    collection = store.processed_events(store.database(client, system.mongo))
    query = {"patientId": {"$in": list(load.partition)}}
    try:
        all_stored_at = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if await collection.count_documents(query) >= load.accepted:
                all_stored_at = time.time()
                break
            await asyncio.sleep(0.25)
    finally:
        await client.close()
    if all_stored_at is None:
        return None, None
    deadline = time.monotonic() + 40  # beyond the ack wait (30 s): a lost ack shows as lag until then
    while time.monotonic() < deadline:
        for t, _, result in watch.backlog:
            if t >= all_stored_at and isinstance(result, Backlog) and result.complete and result.lag == 0:
                return all_stored_at, t
        await asyncio.sleep(0.25)
    return all_stored_at, None


async def _documents(mongo: MongoSettings, load: Load) -> list[StoredEvent]:
    observer = Observer(None, mongo.uri, mongo.database)
    await observer.start()
    try:
        return await observer.documents([load.factory.patient_id(i) for i in load.patients])
    finally:
        await observer.close()


class _Doc(msgspec.Struct):
    patient: str
    n: int
    event_id: str
    started: float
    processed: float
    sequence: int
    attempts: int  # above 1: delivered or run more than once
    processed_by: str


def _stalled(doc: _Doc, load: Load, fault_at: float) -> dict[str, Any]:
    record = load.records.get(doc.event_id)
    return {
        "event": doc.event_id,
        "sequence": doc.sequence,
        "attempts": doc.attempts,
        "processed_by": doc.processed_by,
        "accepted_after_fault_s": round(record.accepted_at - fault_at, 2)
        if record and record.accepted_at
        else None,
        "started_after_fault_s": round(doc.started - fault_at, 2),
    }


async def _raw_documents(mongo: MongoSettings, load: Load) -> list[_Doc]:
    client: AsyncMongoClient[Document] = store.mongo_client(mongo, "cluster-test")
    try:
        collection = store.processed_events(store.database(client, mongo))
        out = []
        async for doc in collection.find({"patientId": {"$in": list(load.partition)}}):
            out.append(
                _Doc(
                    doc["patientId"],
                    int(doc["data"]["seq"]),
                    doc["eventId"],
                    _wall(doc["startedAt"]),
                    _wall(doc["processedAt"]),
                    int(doc["sequence"]),
                    int(doc["attempts"]),
                    str(doc.get("processedBy")),
                )
            )
        return out
    finally:
        await client.close()


def _wall(value: dt.datetime) -> float:
    return value.replace(tzinfo=dt.UTC).timestamp() if value.tzinfo is None else value.timestamp()


def _stalls(
    docs: list[_Doc], load: Load, *, since: float, until: float | None
) -> dict[int, tuple[float, _Doc]]:
    """Per partition, the longest time an event that could run waited to start, and that event:
    from when it became runnable (accepted, its patient's previous event processed, and not
    before ``since``) to its handler's start. Events that started after ``until`` are left out."""
    by_patient: dict[str, list[_Doc]] = defaultdict(list)
    for doc in docs:
        by_patient[doc.patient].append(doc)
    out: dict[int, tuple[float, _Doc]] = {}
    for patient, events in by_patient.items():
        events.sort(key=lambda d: d.n)
        previous_done = 0.0
        for doc in events:
            record = load.records.get(doc.event_id)
            arrived = record.accepted_at if record and record.accepted_at else doc.started
            runnable = max(arrived, previous_done, since)
            previous_done = doc.processed
            if doc.started < since or (until is not None and doc.started > until):
                continue
            p = load.partition[patient]
            if p not in out or doc.started - runnable > out[p][0]:
                out[p] = (doc.started - runnable, doc)
    return out


def dump(run: FaultRun, path: Path) -> None:
    """The run's summary next to the logs, for a failing test's report."""
    path.write_text(json.dumps(run.summary(), indent=2, default=str))
