"""The scale policy: how many processor replicas a backlog and an arrival rate need. Pure, no I/O.

The operator (on Kubernetes) and the local autoscaler (``medevents up``) both call
:func:`desired_replicas` once per poll with an :class:`Observation` and the :class:`ScaleState` the
previous call returned; they differ only in how they read lag and how they start and stop pods.

Sizing: enough pods to absorb the arrival rate *and* drain the backlog within the target time,
``ceil((arrival + lag / target_drain) / per_pod_rate)``, where the per-pod rate is measured (see
:func:`per_pod_capacity`) or, with no history, ``concurrency / delay``. The result is clamped to
``[min, min(max, partitions)]``: a pod beyond the partition count would have nothing of its own
to pull.

Against flapping, as the Kubernetes HPA does it: scale up to the *lowest* target seen in the up
window (0 s by default: jump straight to the target), scale down to the *highest* target seen in
the down window, and by at most ``max_scale_down_step`` pods at a time. With ``min_replicas`` 0 the
last pod goes away after ``idle_s`` without lag or arrivals, and anything arriving brings one back
on the next poll. The fallback rate is a guess, so without a measured rate the policy never scales
down while there is lag (it may still scale up on it).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import msgspec

from medevents.cluster import Member

__all__ = [
    "Decision",
    "Observation",
    "ScaleSpec",
    "ScaleState",
    "desired_replicas",
    "per_pod_capacity",
]

# A shortest processing time for the fallback sizing: with a configured delay of 0 the real limit
# is the database, unknown until pods report a measured rate.
_MIN_DELAY_S = 0.001
_EPSILON = 1e-9


class ScaleSpec(msgspec.Struct, frozen=True):
    """The policy's settings (from the EventPipeline spec, or the local runner's settings)."""

    min_replicas: int = 1  # fewest pods; 0 allows scale to zero after idle_s
    max_replicas: int = 10  # most pods
    partitions: int = 16  # stream partitions: more pods than this would idle
    target_drain_s: float = 60.0  # drain the backlog within this many seconds
    scale_up_window_s: float = 0.0  # scale up to the lowest target seen in this window
    scale_down_window_s: float = 60.0  # scale down to the highest target seen in this window
    max_scale_down_step: int = 2  # most pods removed by one decision
    idle_s: float = 300.0  # with min 0: no lag and no arrivals this long -> zero pods
    concurrency: int = 2000  # events in flight per pod (fallback sizing)
    delay_s: float = 5.5  # mean processing time per event in seconds (fallback sizing)

    @property
    def ceiling(self) -> int:
        """The most pods the policy ever asks for (never below ``min_replicas``)."""
        return max(self.min_replicas, min(self.max_replicas, self.partitions))

    @property
    def fallback_rate(self) -> float:
        """Events/s one pod handles when nothing was measured: concurrency / processing time."""
        return self.concurrency / max(self.delay_s, _MIN_DELAY_S)


class Observation(msgspec.Struct, frozen=True):
    """What one poll saw."""

    now: float  # seconds on a monotonic clock
    lag: int  # pending + ack-pending over the partition consumers
    arrival_rate: float  # events/s arriving
    current: int  # replicas running now
    per_pod_rate: float | None = None  # measured events/s one pod can handle; None = no history


class ScaleState(msgspec.Struct, frozen=True):
    """What the policy remembers between polls: recent targets and the last time there was work."""

    history: tuple[tuple[float, int], ...] = ()  # (time, unstabilized target), oldest first
    last_active: float | None = None  # last time lag or arrivals were seen


class Decision(msgspec.Struct, frozen=True):
    """The policy's answer for one poll."""

    replicas: int  # what to scale to
    target: int  # the unstabilized target of this poll
    reason: str  # ScaleUp, ScaleDown, ScaleToZero, Activate, Hold or Stabilizing
    message: str  # the inputs and the arithmetic, for events and logs
    per_pod_rate: float  # the rate the sizing used (measured or fallback)
    state: ScaleState  # pass it to the next call


def per_pod_capacity(members: Iterable[Member]) -> float | None:
    """Events/s one pod could handle, estimated from the pods' heartbeats; None without data.

    A pod's measured rate alone is what it was *given*, not what it *can* do: an underloaded pod
    processes exactly the arrival rate, and sizing on that would never scale down. By Little's law
    a pod's throughput is ``in_flight / latency``, so at full concurrency it would be
    ``processed_per_s * capacity / in_flight`` (exact when the handler's time dominates, an
    overestimate when the database does, which the in-flight count then shows as saturation).
    Draining pods are left out; the estimates of the others are averaged.
    """
    estimates = [
        m.processed_per_s * max(1.0, m.capacity / m.in_flight)
        for m in members
        if not m.draining and m.processed_per_s > 0 and m.in_flight > 0 and m.capacity > 0
    ]
    return sum(estimates) / len(estimates) if estimates else None


def _needed(spec: ScaleSpec, obs: Observation, rate: float) -> int:
    need = max(0.0, obs.arrival_rate) + max(0, obs.lag) / spec.target_drain_s
    return math.ceil(need / rate - _EPSILON) if need > 0 else 0


def desired_replicas(spec: ScaleSpec, state: ScaleState, obs: Observation) -> Decision:
    """Replicas for this poll, the reason, and the state to pass to the next call."""
    rate = obs.per_pod_rate if obs.per_pod_rate and obs.per_pod_rate > 0 else spec.fallback_rate
    active = obs.lag > 0 or obs.arrival_rate > 0
    last_active = obs.now if active or state.last_active is None else state.last_active
    needed = _needed(spec, obs, rate)
    if active:
        needed = max(needed, 1)
    # min 0: keep one pod through the idle window, then let it go; never start one for nothing.
    idle_for = obs.now - last_active
    floor = spec.min_replicas or (1 if obs.current > 0 and idle_for < spec.idle_s else 0)
    target = min(max(needed, floor), spec.ceiling)

    horizon = max(spec.scale_up_window_s, spec.scale_down_window_s)
    kept = ((t, n) for t, n in state.history if obs.now - horizon <= t < obs.now)
    history = (*kept, (obs.now, target))
    up = min(n for t, n in history if t >= obs.now - spec.scale_up_window_s)
    down = max(n for t, n in history if t >= obs.now - spec.scale_down_window_s)

    current = obs.current
    measured = bool(obs.per_pod_rate and obs.per_pod_rate > 0)
    if current == 0 and target > 0:
        replicas, reason = max(up, 1), "Activate"
    elif up > current:
        replicas, reason = up, "ScaleUp"
    elif down < current and not measured and obs.lag > 0:
        # The fallback rate (concurrency / configured delay) is a guess, and often far above what
        # the database allows: removing pods on it while work waits would slow the drain.
        replicas, reason = current, "Hold"
    elif down < current:
        replicas = max(down, current - spec.max_scale_down_step)
        reason = "ScaleToZero" if replicas == 0 else "ScaleDown"
    elif target != current:
        replicas, reason = current, "Stabilizing"
    else:
        replicas, reason = current, "Hold"
    bounded = min(max(replicas, spec.min_replicas), spec.ceiling)
    if bounded != replicas:  # the current count was outside the bounds (changed by hand, spec edit)
        replicas = bounded
        reason = "ScaleUp" if bounded > current else "ScaleDown" if bounded < current else "Hold"
    message = (
        f"lag={obs.lag} arrival={obs.arrival_rate:.1f}/s per_pod={rate:.1f}/s"
        f"{'' if measured else ' (fallback: no scale-down while lag)'} drain_target={spec.target_drain_s:g}s "
        f"needed={needed} target={target} stabilized_up={up} stabilized_down={down} "
        f"current={current} -> {replicas}"
    )
    return Decision(replicas, target, reason, message, rate, ScaleState(history, last_active))
