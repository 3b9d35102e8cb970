"""What processors, the operator and the local runner tell each other through NATS KV.

- Membership (bucket ``medevents_members``, key = member id): each processor pod heartbeats a
  :class:`Member` record; the bucket's TTL removes pods that stop. Partition affinity comes from
  :func:`preferred_owner` (rendezvous hashing) over the live members: an optimisation only, the
  ordering fence keeps correctness whoever pulls what.
- Tuning (bucket ``medevents_tuning``, key ``processor``): the operator publishes a :class:`Tuning`;
  processors watch the key and apply it live, without a restart.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import msgspec

__all__ = [
    "Member",
    "Tuning",
    "decode_member",
    "decode_tuning",
    "encode",
    "owned_partitions",
    "preferred_owner",
]


class Member(msgspec.Struct, frozen=True):
    """One processor pod's heartbeat."""

    id: str  # unique per process: pod name (HOSTNAME) + a random suffix
    pod: str  # Kubernetes pod name (HOSTNAME), for the pod-deletion-cost annotation
    in_flight: int  # events held (running or queued in a lane)
    capacity: int  # the concurrency bound it runs with
    partitions: list[int]  # partitions it is pulling now
    processed_per_s: float  # recent processing rate (events/s)
    draining: bool = False  # SIGTERM received: finishing held work, fetching nothing new
    updated_at: float = 0.0  # unix seconds of this heartbeat


class Tuning(msgspec.Struct, frozen=True, omit_defaults=True):
    """Live processor tuning; a field left out keeps the processor's own setting."""

    concurrency: int | None = None  # events in flight per pod
    delay_min_ms: int | None = None  # simulated processing time, lower bound
    delay_max_ms: int | None = None  # simulated processing time, upper bound
    ack_wait_s: float | None = None  # JetStream ack wait of the partition consumers
    max_attempts: int | None = None  # same error this often -> dead letter
    generation: int = 0  # the EventPipeline generation it came from


encode = msgspec.json.Encoder().encode
_member_decoder = msgspec.json.Decoder(Member)
_tuning_decoder = msgspec.json.Decoder(Tuning)


def decode_member(data: bytes) -> Member:
    return _member_decoder.decode(data)


def decode_tuning(data: bytes) -> Tuning:
    return _tuning_decoder.decode(data)


def _score(member_id: str, partition: int) -> bytes:
    return hashlib.blake2b(f"{member_id}/{partition}".encode(), digest_size=8).digest()


def preferred_owner(partition: int, member_ids: Iterable[str]) -> str | None:
    """The member that should pull ``partition``: highest rendezvous score wins, so a member
    joining or leaving moves only the partitions it wins or held (about 1/N of them)."""
    return max(member_ids, key=lambda m: _score(m, partition), default=None)


def owned_partitions(member_id: str, members: Iterable[Member], partitions: int) -> list[int]:
    """The partitions ``member_id`` should pull: those it is the preferred owner of among the live
    members that are not draining. It counts itself in even when its own record is missing (its
    heartbeat may not have landed yet); a draining member owns nothing."""
    live = {m.id for m in members if not m.draining}
    if any(m.id == member_id and m.draining for m in members):
        return []
    live.add(member_id)
    return [p for p in range(partitions) if preferred_owner(p, live) == member_id]
