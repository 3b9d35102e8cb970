"""The EventPipeline status as plain data: conditions and the numbers of the last poll. Pure.

Conditions follow the Kubernetes convention (type, status "True"/"False"/"Unknown", reason,
message, lastTransitionTime that moves only when the status flips, observedGeneration):

- ``StreamReady``: stream EVENTS and every partition consumer exist as the spec wants.
- ``Degraded``: the last poll gave no trustworthy lag (NATS unreachable, stream or a consumer
  missing, a leaderless consumer, stale data, the workload missing, an unusable spec). While it is
  True the operator does not scale at all: it neither adds nor removes pods.
- ``Scaling``: True while the last decision changed the replica count.
- ``Ready``: StreamReady and not Degraded.
- ``NatsDurable``: every NATS server fsyncs before it acknowledges (``spec.nats.monitorUrl``'s
  ``/varz``); False names the servers that do not, Unknown when it cannot be read or no URL is set.
  It does not affect Ready: the pipeline works, but a power failure can lose accepted events.
"""

from __future__ import annotations

import datetime
from typing import Any

import msgspec

from medevents.backlog import Backlog, Rates
from medevents.scaling import Decision

__all__ = ["Condition", "Conditions", "decision_status", "iso", "poll_status"]

TYPES = ("Ready", "StreamReady", "Scaling", "Degraded", "NatsDurable")


def iso(when: datetime.datetime) -> str:
    """RFC 3339 in UTC with a Z, as Kubernetes writes times."""
    return when.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Condition(msgspec.Struct, frozen=True, rename="camel", omit_defaults=True):
    type: str
    status: str  # "True", "False" or "Unknown"
    reason: str = ""
    message: str = ""
    last_transition_time: str = ""
    observed_generation: int = 0


class Conditions:
    """The conditions of one EventPipeline, kept in memory and written out whole."""

    def __init__(self, existing: Any = None) -> None:
        self._by_type: dict[str, Condition] = {}
        for raw in existing or []:
            try:
                condition = msgspec.convert(raw, Condition)
            except msgspec.ValidationError:
                continue
            if condition.type in TYPES:
                self._by_type[condition.type] = condition

    def set(
        self, type_: str, status: bool | None, reason: str, message: str, now: str, generation: int
    ) -> bool:
        """Set one condition (None: Unknown); True if its status flipped (worth an event)."""
        value = "Unknown" if status is None else "True" if status else "False"
        old = self._by_type.get(type_)
        flipped = old is None or old.status != value
        since = now if flipped or old is None else old.last_transition_time
        self._by_type[type_] = Condition(type_, value, reason, message, since, generation)
        return flipped

    def get(self, type_: str) -> Condition | None:
        return self._by_type.get(type_)

    def is_true(self, type_: str) -> bool:
        condition = self._by_type.get(type_)
        return condition is not None and condition.status == "True"

    def derive_ready(self, now: str, generation: int) -> None:
        """Ready = StreamReady and not Degraded, with the blocking reason."""
        degraded = self._by_type.get("Degraded")
        stream = self._by_type.get("StreamReady")
        if degraded is not None and degraded.status == "True":
            self.set("Ready", False, degraded.reason, degraded.message, now, generation)
        elif stream is None or stream.status != "True":
            reason = stream.reason if stream else "Reconciling"
            self.set("Ready", False, reason, stream.message if stream else "", now, generation)
        else:
            self.set("Ready", True, "Ready", "lag is read and the workload is scaled", now, generation)

    def to_list(self) -> list[dict[str, Any]]:
        return [msgspec.to_builtins(self._by_type[t]) for t in TYPES if t in self._by_type]


def poll_status(
    backlog: Backlog,
    rates: Rates,
    per_pod_rate: float,
    replicas: int,
    desired: int,
    now: str,
) -> dict[str, Any]:
    """The numbers of one successful poll, as status fields."""
    return {
        "partitions": backlog.partitions,
        "lag": backlog.lag,
        "pending": backlog.pending,
        "ackPending": backlog.ack_pending,
        "arrivalRate": round(rates.arrival, 2),
        "processingRate": round(rates.processing, 2),
        "perPodRate": round(per_pod_rate, 2),
        "replicas": replicas,
        "desiredReplicas": desired,
        "lastPollTime": now,
    }


def decision_status(decision: Decision, before: int, now: str) -> dict[str, Any]:
    """The ``lastDecision`` status field."""
    return {
        "fromReplicas": before,
        "toReplicas": decision.replicas,
        "reason": decision.reason,
        "message": decision.message,
        "time": now,
    }
