"""The local autoscaler of ``medevents up``: the operator's ScalePolicy over processor processes.

Every ``MEDEVENTS_AUTOSCALE_POLL_S`` it reads the backlog of stream EVENTS and the processors'
heartbeats from NATS (the same reads as the operator), asks :func:`desired_replicas`, tells the
:class:`ProcessorPool` to start or stop processes, and writes the decision to
``<data dir>/autoscaler.json`` for ``medevents status``. An incomplete read (a consumer missing,
NATS away) scales nothing, as on Kubernetes.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
from pathlib import Path
from typing import Any, Protocol

import msgspec
import nats.errors
from nats.aio.client import Client as NATS
from nats.js.errors import Error as JetStreamError

from medevents.backlog import Backlog, StreamMissingError, rates, read_backlog, read_members
from medevents.config import AutoscaleSettings, NatsSettings, ProcessorSettings
from medevents.natsconn import connect
from medevents.scaling import Decision, Observation, ScaleSpec, ScaleState, desired_replicas, per_pod_capacity

__all__ = ["AUTOSCALER_FILE", "LocalAutoscaler", "ProcessorPool", "scale_spec", "with_floor"]

log = logging.getLogger("medevents.local.autoscaler")

AUTOSCALER_FILE = "autoscaler.json"
_NATS_ERRORS = (nats.errors.Error, JetStreamError, OSError, TimeoutError)


class ProcessorPool(Protocol):
    """What the autoscaler drives: the runner's processor processes."""

    def count(self) -> int:
        """Processors running now."""
        ...

    async def scale_to(self, n: int) -> None:
        """Start or gracefully stop processors until ``n`` run."""
        ...


def with_floor(settings: AutoscaleSettings, processors: int | None) -> AutoscaleSettings:
    """The settings with ``medevents up --processors N``: N processors always run (the minimum),
    and the maximum is at least N. None (no option) keeps ``MEDEVENTS_AUTOSCALE_MIN_PROCESSORS``."""
    if processors is None:
        return settings
    return msgspec.structs.replace(
        settings, min_processors=processors, max_processors=max(settings.max_processors, processors)
    )


def scale_spec(settings: AutoscaleSettings, processor: ProcessorSettings, partitions: int) -> ScaleSpec:
    """The policy's settings for local processors."""
    return ScaleSpec(
        min_replicas=settings.min_processors,
        max_replicas=settings.max_processors,
        partitions=partitions,
        target_drain_s=settings.target_drain_s,
        scale_up_window_s=0.0,
        scale_down_window_s=settings.scale_down_window_s,
        max_scale_down_step=settings.max_scale_down_step,
        idle_s=settings.idle_s,
        concurrency=processor.concurrency,
        delay_s=(processor.delay_min_ms + processor.delay_max_ms) / 2000,
    )


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class LocalAutoscaler:
    """Polls NATS and resizes a :class:`ProcessorPool` with the ScalePolicy."""

    def __init__(
        self,
        nats_settings: NatsSettings,
        pool: ProcessorPool,
        settings: AutoscaleSettings,
        processor: ProcessorSettings,
        data_dir: Path,
    ) -> None:
        self.nats_settings = nats_settings
        self.pool = pool
        self.settings = settings
        self.processor = processor
        self.path = data_dir / AUTOSCALER_FILE
        self.state = ScaleState()
        self.previous: Backlog | None = None
        self.last_decision: dict[str, Any] | None = None
        self._nc: NATS | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop`` is set."""
        try:
            while not stop.is_set():
                await self.poll_once()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.settings.poll_s)
        finally:
            await self.close()

    async def close(self) -> None:
        """Close the NATS connection (the next poll would open a new one)."""
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.close()
        self._nc = None

    async def poll_once(self) -> Decision | None:
        """One decision (None when the read was incomplete: nothing is scaled then)."""
        try:
            if self._nc is None or self._nc.is_closed:
                self._nc = await connect(self.nats_settings, "medevents-autoscaler", allow_reconnect=False)
            js = self._nc.jetstream(timeout=self.nats_settings.request_timeout_s)
            backlog = await read_backlog(js)
            members = await read_members(js)
        except (StreamMissingError, *_NATS_ERRORS) as exc:
            self._hold(f"no fresh lag: {type(exc).__name__}: {exc}")
            return None
        if not backlog.complete:
            self._hold(f"consumers missing or leaderless: {', '.join(backlog.missing + backlog.leaderless)}")
            return None
        flow = rates(self.previous, backlog)
        self.previous = backlog
        current = self.pool.count()
        spec = scale_spec(self.settings, self.processor, backlog.partitions)
        obs = Observation(backlog.at, backlog.lag, flow.arrival, current, per_pod_capacity(members))
        decision = desired_replicas(spec, self.state, obs)
        self.state = decision.state
        if decision.replicas != current:
            log.info(
                "scaling processors",
                extra={
                    "from": current,
                    "to": decision.replicas,
                    "reason": decision.reason,
                    "inputs": decision.message,
                },
            )
            await self.pool.scale_to(decision.replicas)
            self.last_decision = {
                "fromReplicas": current,
                "toReplicas": decision.replicas,
                "reason": decision.reason,
                "message": decision.message,
                "time": _now(),
            }
        self._write(
            {
                "desired": decision.replicas,
                "current": self.pool.count(),
                "min": spec.min_replicas,
                "max": spec.ceiling,
                "lag": backlog.lag,
                "arrivalRate": round(flow.arrival, 2),
                "processingRate": round(flow.processing, 2),
                "degraded": "",
                "decision": self.last_decision,
                "time": _now(),
            }
        )
        return decision

    def _hold(self, why: str) -> None:
        self.previous = None
        log.warning("autoscaler holding; not scaling", extra={"reason": why})
        self._write(
            {
                "desired": self.pool.count(),
                "current": self.pool.count(),
                "degraded": why,
                "decision": self.last_decision,
                "time": _now(),
            }
        )

    def _write(self, body: dict[str, Any]) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(body, indent=2) + "\n")
        tmp.replace(self.path)
