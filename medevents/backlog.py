"""Reading the backlog of stream EVENTS through the JetStream API, and rates between two reads.

One read asks the stream and every partition consumer for its info: the JetStream API is
answered by the stream or consumer *leader*, so a lagging follower's numbers never count (the
KEDA scaler's monitoring-endpoint hunt did exactly that). Lag is ``num_pending + num_ack_pending``
summed over the partition consumers. A missing consumer or a leaderless one makes the read
*incomplete*: callers must not scale on it (a missing consumer once read as a huge lag in KEDA and
scaled workloads to max).

Used by the operator, the local autoscaler and ``medevents status``; :func:`patient_pending`
(one patient's waiting events) by the ingest API's patient summary.
"""

from __future__ import annotations

import asyncio
import time

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError, NoKeysError, NotFoundError

from medevents import topology
from medevents.cluster import Member, decode_member
from medevents.subjects import INGEST_PREFIX

__all__ = [
    "Backlog",
    "Rates",
    "StreamMissingError",
    "patient_pending",
    "rates",
    "read_backlog",
    "read_members",
]


class Backlog(msgspec.Struct, frozen=True):
    """One read of the stream and its partition consumers."""

    at: float  # monotonic seconds when the read finished
    took_s: float  # how long the read took
    partitions: int  # the stream's partition count
    last_seq: int  # the stream's last sequence (grows with every stored event)
    pending: int  # not yet delivered, over the partition consumers
    ack_pending: int  # delivered, not yet acknowledged
    missing: tuple[str, ...] = ()  # partition consumers that do not exist
    leaderless: tuple[str, ...] = ()  # consumers whose replicas have no leader

    @property
    def lag(self) -> int:
        return self.pending + self.ack_pending

    @property
    def complete(self) -> bool:
        """Every partition consumer answered through its leader: safe to scale on."""
        return not self.missing and not self.leaderless


class Rates(msgspec.Struct, frozen=True):
    """Events/s between two reads."""

    arrival: float  # stored in the stream
    processing: float  # acknowledged (arrivals minus the growth of the lag)


class StreamMissingError(Exception):
    """Stream EVENTS does not exist or has no partition transform."""


async def read_backlog(js: JetStreamContext, *, timeout_s: float = 5.0) -> Backlog:
    """Read stream EVENTS and its partition consumers (the partition count comes from the stream).

    Raises :class:`StreamMissingError` when the stream is absent, and lets NATS errors
    (timeouts, no responders) propagate: both mean "no fresh data".
    """
    started = time.monotonic()
    try:
        stream = await js.stream_info(topology.STREAM)
    except NotFoundError:
        raise StreamMissingError(f"stream {topology.STREAM} does not exist") from None
    partitions = topology.partitions_of(stream.config)
    if partitions is None:
        raise StreamMissingError(f"stream {topology.STREAM} has no partition transform")

    async def one(p: int) -> tuple[str, int, int, bool] | str:
        name = topology.consumer_name(p)
        try:
            info = await js.consumer_info(topology.STREAM, name, timeout=timeout_s)
        except NotFoundError:
            return name
        clustered = info.cluster is not None and bool(info.cluster.replicas)
        leaderless = clustered and not (info.cluster and info.cluster.leader)
        return name, info.num_pending or 0, info.num_ack_pending or 0, leaderless

    answers = await asyncio.gather(*(one(p) for p in range(partitions)))
    found = [a for a in answers if not isinstance(a, str)]
    now = time.monotonic()
    return Backlog(
        at=now,
        took_s=now - started,
        partitions=partitions,
        last_seq=stream.state.last_seq,
        pending=sum(a[1] for a in found),
        ack_pending=sum(a[2] for a in found),
        missing=tuple(a for a in answers if isinstance(a, str)),
        leaderless=tuple(a[0] for a in found if a[3]),
    )


def rates(before: Backlog | None, after: Backlog) -> Rates:
    """Arrival and processing rates between two reads (zeros without a previous read)."""
    if before is None or after.at <= before.at:
        return Rates(0.0, 0.0)
    dt = after.at - before.at
    arrived = max(0, after.last_seq - before.last_seq)
    processed = max(0, arrived - (after.lag - before.lag))
    return Rates(arrived / dt, processed / dt)


async def read_members(js: JetStreamContext) -> list[Member]:
    """The processor pods' current heartbeats (empty when no processor ever ran)."""
    try:
        kv = await js.key_value(topology.MEMBERS_BUCKET)
        keys = await kv.keys()
    except (BucketNotFoundError, NoKeysError, NotFoundError):
        return []
    members = []
    for key in keys:
        try:
            entry = await kv.get(key)
        except NotFoundError:  # expired between keys() and get()
            continue
        if entry.value:
            try:
                members.append(decode_member(entry.value))
            except msgspec.DecodeError:
                continue  # a record from an incompatible version: not ours to size on
    return members


async def patient_pending(js: JetStreamContext, token: str, watermark: int) -> int:
    """How many of a patient's events wait in stream EVENTS after its ``watermark`` (the stream
    sequence of its last applied event), without a consumer: a work-queue stream refuses a second
    consumer whose filter overlaps the partition consumer's.

    The stream keeps a message until it is acknowledged, which comes just after the watermark
    moves, so the patient's stored subject (``events.<partition>.<token>``; the wildcard saves
    knowing the partition) may still hold a few applied events at or below the watermark. The
    answer is the subject's message count (a subject-filtered stream info) minus those, found by
    walking the subject from its first message with ``next_by_subj`` gets: one get per applied but
    unacknowledged event, plus one. A snapshot: events acknowledged between the two reads can
    make it one or two too high for a moment.
    """
    try:
        info = await js.stream_info(topology.STREAM, subjects_filter=f"{INGEST_PREFIX}.*.{token}")
    except NotFoundError:
        raise StreamMissingError(f"stream {topology.STREAM} does not exist") from None
    subjects = info.state.subjects or {}
    applied = 0
    if watermark >= info.state.first_seq:
        for subject in subjects:
            seq = info.state.first_seq
            while True:
                try:
                    msg = await js.get_msg(topology.STREAM, seq=seq, subject=subject, next=True)
                except NotFoundError:
                    break
                if msg.seq is None or msg.seq > watermark:
                    break
                applied += 1
                seq = msg.seq + 1
    return max(0, sum(subjects.values()) - applied)
