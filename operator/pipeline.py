"""One EventPipeline's poll loop: reconcile, read lag, decide, scale, report.

The kopf daemon of each EventPipeline runs :meth:`PipelineLoop.run`. Every poll it

1. parses the spec (an unusable spec: Degraded, nothing else);
2. (re)connects to NATS with the spec's URL, credentials and TLS;
3. on a new spec generation, reconciles the stream, the partition consumers and the tuning KV,
   refusing a partition change (StreamReady False, a Warning event);
4. reads the backlog through the JetStream API (the leaders answer) and the pods' heartbeats;
5. when that read is complete and fresh, asks :func:`medevents.scaling.desired_replicas` and
   patches the workload's scale subresource (pods annotated with their deletion cost first when
   going down), with an event and a log line carrying the inputs; when it is not, sets Degraded
   and leaves the replicas alone — never "scale to max on missing data";
6. writes the status.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable
from typing import Any

import kopf
import nats.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.errors import Error as JetStreamError

from medevents import tracing
from medevents.backlog import Backlog, StreamMissingError, rates, read_backlog, read_members
from medevents.cluster import Member
from medevents.config import NatsSettings, SettingsError, redact_url
from medevents.natsconn import connect
from medevents.natsmonitor import SyncState, SyncWatch, monitor_urls
from medevents.scaling import Decision, Observation, ScaleState, desired_replicas, per_pod_capacity

from ._metrics import PipelineMetrics
from .kube import Kube, KubeError, pipeline_path
from .natsauth import NatsAuth, SecretError
from .scale import annotate_deletion_cost, read_replicas, scale_to
from .spec import EventPipelineSpec, SpecError, parse_spec, scale_spec
from .status import Conditions, decision_status, iso, poll_status
from .streams import publish_tuning, reconcile_topology

__all__ = ["PipelineLoop"]

log = logging.getLogger("medevents.operator")

_NATS_ERRORS = (nats.errors.Error, JetStreamError, OSError, TimeoutError)

EventFn = Callable[[str, str, str], None]  # (type, reason, message)


def _redacted(urls: str) -> str:
    """NATS URLs without passwords or tokens (they end up in the status and in events)."""
    return ",".join(redact_url(u.strip()) for u in urls.split(","))


class NotFresh(Exception):
    """No trustworthy lag this poll; the message says why (a Degraded reason + message)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class PipelineLoop:
    """The state one EventPipeline keeps between polls."""

    def __init__(
        self, kube: Kube, namespace: str, name: str, event: EventFn, metrics: PipelineMetrics | None = None
    ) -> None:
        self.kube = kube
        self.metrics = metrics or PipelineMetrics()
        self.namespace = namespace
        self.name = name
        self.event = event
        self.conditions = Conditions()
        self.scale_state = ScaleState()
        self.previous: Backlog | None = None
        self.reconciled_generation: int | None = None
        self.partitions: int | None = None
        self.nc: NATS | None = None
        self.nats_settings: NatsSettings | None = None
        self.connected_generation: int | None = None
        self.auth = NatsAuth()
        self.last_decision: dict[str, Any] | None = None
        self.nats_sync = SyncWatch("")

    # --- lifecycle --------------------------------------------------------------------------

    async def run(self, body: kopf.Body, stopped: kopf.DaemonStopped) -> None:
        """Poll until the daemon is stopped (object deleted, operator exiting)."""
        self.conditions = Conditions((body.get("status") or {}).get("conditions"))
        try:
            while not stopped:
                interval = await self.poll(body)
                await stopped.wait(interval)
        finally:
            await self.close()

    async def close(self) -> None:
        """Disconnect and remove the credential files."""
        await self._disconnect()
        self.auth.cleanup()

    # --- one poll ---------------------------------------------------------------------------

    async def poll(self, body: kopf.Body) -> float:
        """One poll (span ``poll EventPipeline``); returns the seconds until the next."""
        with tracing.span("poll EventPipeline") as span:
            if span is not None:
                span.set_attribute("k8s.namespace.name", self.namespace)
                span.set_attribute("medevents.pipeline", self.name)
            return await self._poll(body, span)

    async def _poll(self, body: kopf.Body, span: tracing.Span | None) -> float:
        generation = int(body.get("metadata", {}).get("generation") or 0)
        now = iso(datetime.datetime.now(datetime.UTC))
        try:
            spec = parse_spec(body.get("spec"))
        except SpecError as exc:
            self._degrade("InvalidSpec", str(exc), now, generation)
            await self._write_status({}, now, generation)
            return 5.0
        interval = spec.scaling.poll_interval_seconds
        await self._check_nats_sync(spec, now, generation)
        try:
            js = await self._jetstream(spec, generation)
            if self.reconciled_generation != generation:
                await self._reconcile(js, spec, generation, now)
            backlog = await self._read(js, spec)
            members = await self._members(js)
            replicas = await self._replicas(spec)
        except NotFresh as exc:
            self._degrade(exc.reason, str(exc), now, generation)
            await self._write_status({}, now, generation)
            return interval
        measured = per_pod_capacity(members)
        flow = rates(self.previous, backlog)
        self.previous = backlog
        policy = scale_spec(spec, backlog.partitions)
        decision = desired_replicas(
            policy,
            self.scale_state,
            Observation(backlog.at, backlog.lag, flow.arrival, replicas, measured),
        )
        self.scale_state = decision.state
        if self.conditions.is_true("Degraded"):
            self.conditions.set(
                "Degraded", False, "LagFresh", "lag read from every partition consumer", now, generation
            )
            self.event("Normal", "Recovered", "lag is read again; scaling resumes")
        scaled = await self._act(spec, decision, replicas, members, now, generation)
        self.metrics.observed(
            self.namespace,
            self.name,
            backlog=backlog,
            rates=flow,
            replicas=decision.replicas if scaled else replicas,
            desired=decision.replicas,
            max_replicas=policy.ceiling,
            target_drain_s=policy.target_drain_s,
        )
        if span is not None:
            span.set_attributes(
                {"medevents.lag": backlog.lag, "medevents.desired_replicas": decision.replicas}
            )
        status = poll_status(
            backlog,
            flow,
            decision.per_pod_rate,
            decision.replicas if scaled else replicas,
            decision.replicas,
            now,
        )
        await self._write_status(status, now, generation)
        return interval

    async def _check_nats_sync(self, spec: EventPipelineSpec, now: str, generation: int) -> None:
        """The NatsDurable condition, from the servers' ``/varz`` (read at most once a minute)."""
        if self.nats_sync.urls != monitor_urls(spec.nats.monitor_url):
            self.nats_sync = SyncWatch(spec.nats.monitor_url)
        verdict = await self.nats_sync.refresh()
        status, reason = {
            SyncState.ALWAYS: (True, "FsyncBeforeAck"),
            SyncState.UNSAFE: (False, "AckBeforeFsync"),
            SyncState.UNKNOWN: (None, "NotChecked" if not self.nats_sync.urls else "Unreadable"),
        }[verdict.state]
        flipped = self.conditions.set("NatsDurable", status, reason, verdict.message, now, generation)
        if flipped and status is False:
            self.event("Warning", "NatsNotDurable", verdict.message)

    async def _jetstream(self, spec: EventPipelineSpec, generation: int) -> JetStreamContext:
        """A JetStream context on a live connection. The spec's URL and Secrets are read when
        connecting and on every new spec generation (a rotated Secret applies at the next)."""
        if self.nc is not None and (self.nc.is_closed or self.connected_generation != generation):
            await self._disconnect()
        if self.nc is None:
            try:
                settings = await self.auth.settings(self.kube, self.namespace, spec.nats)
            except (SecretError, SettingsError) as exc:
                raise NotFresh("NatsCredentials", str(exc)) from None
            try:
                # No background reconnects: a poll that finds the connection gone connects again,
                # and an unreachable server fails this poll fast instead of hanging it.
                self.nc = await connect(
                    settings, f"medevents-operator {self.namespace}/{self.name}", allow_reconnect=False
                )
            except _NATS_ERRORS as exc:
                raise NotFresh(
                    "NatsUnreachable", f"cannot connect to {_redacted(settings.url)}: {type(exc).__name__}"
                ) from None
            self.nats_settings, self.connected_generation = settings, generation
        assert self.nats_settings is not None
        if not self.nc.is_connected:
            await self._disconnect()
            raise NotFresh("NatsUnreachable", f"lost the connection to {_redacted(self.nats_settings.url)}")
        return self.nc.jetstream(timeout=self.nats_settings.request_timeout_s)

    async def _disconnect(self) -> None:
        if self.nc is not None and not self.nc.is_closed:
            await self.nc.close()
        self.nc = None

    async def _reconcile(
        self, js: JetStreamContext, spec: EventPipelineSpec, generation: int, now: str
    ) -> None:
        try:
            done = await reconcile_topology(js, spec)
            await publish_tuning(js, spec, generation, spec.stream.replicas)
        except _NATS_ERRORS as exc:
            raise NotFresh(
                "NatsUnreachable", f"reconciling the stream failed: {type(exc).__name__}: {exc}"
            ) from None
        self.partitions = done.partitions
        if done.refused:
            if self.conditions.set(
                "StreamReady", False, "PartitionChangeRefused", done.refused, now, generation
            ):
                self.event("Warning", "PartitionChangeRefused", done.refused)
            log.warning("partition change refused", extra={"pipeline": self.name, "detail": done.refused})
        else:
            what = [*(["stream created"] if done.created_stream else []), *done.stream_changes]
            what += [f"consumers created: {len(done.created_consumers)}"] if done.created_consumers else []
            what += [f"consumers updated: {len(done.updated_consumers)}"] if done.updated_consumers else []
            message = f"stream EVENTS with {done.partitions} partitions and its consumers match the spec"
            self.conditions.set("StreamReady", True, "Reconciled", message, now, generation)
            if what:
                self.event("Normal", "Reconciled", "; ".join(what))
        self.reconciled_generation = generation

    async def _read(self, js: JetStreamContext, spec: EventPipelineSpec) -> Backlog:
        try:
            backlog = await read_backlog(js)
        except StreamMissingError as exc:
            self.reconciled_generation = None  # recreate it on the next poll
            raise NotFresh("StreamMissing", str(exc)) from None
        except _NATS_ERRORS as exc:
            raise NotFresh("NatsUnreachable", f"reading consumer info failed: {type(exc).__name__}") from None
        if backlog.missing:
            raise NotFresh(
                "ConsumerMissing",
                f"partition consumers missing: {', '.join(backlog.missing)}; not scaling until they are back "
                "(running processors recreate a deleted consumer; editing the EventPipeline reconciles too)",
            )
        if backlog.leaderless:
            raise NotFresh("NoLeader", f"consumers without a leader: {', '.join(backlog.leaderless)}")
        if backlog.took_s > spec.scaling.poll_interval_seconds:
            raise NotFresh(
                "StaleData", f"reading the consumers took {backlog.took_s:.1f}s, longer than a poll"
            )
        return backlog

    async def _members(self, js: JetStreamContext) -> list[Member]:
        try:
            return await read_members(js)
        except _NATS_ERRORS as exc:
            raise NotFresh(
                "NatsUnreachable", f"reading processor heartbeats failed: {type(exc).__name__}"
            ) from None

    async def _replicas(self, spec: EventPipelineSpec) -> int:
        try:
            return await read_replicas(self.kube, self.namespace, spec.processor)
        except KubeError as exc:
            reason = "WorkloadMissing" if exc.status == 404 else "KubernetesUnreachable"
            raise NotFresh(reason, f"{spec.processor.kind} {spec.processor.name}: {exc}") from None

    async def _act(
        self,
        spec: EventPipelineSpec,
        decision: Decision,
        current: int,
        members: list[Member],
        now: str,
        generation: int,
    ) -> bool:
        """Scale if the decision says so; True if the replicas were changed."""
        if decision.replicas == current:
            if self.conditions.is_true("Scaling") or self.conditions.get("Scaling") is None:
                self.conditions.set("Scaling", False, decision.reason, decision.message, now, generation)
            return False
        try:
            if decision.replicas < current:
                await annotate_deletion_cost(self.kube, self.namespace, spec.processor, members)
            await scale_to(self.kube, self.namespace, spec.processor, decision.replicas)
        except KubeError as exc:
            self._degrade("ScaleFailed", f"scaling {spec.processor.name} failed: {exc}", now, generation)
            return False
        self.last_decision = decision_status(decision, current, now)
        self.conditions.set(
            "Scaling", True, decision.reason, f"{current} -> {decision.replicas}", now, generation
        )
        self.event("Normal", decision.reason, decision.message)
        log.info(
            "scaled",
            extra={
                "pipeline": f"{self.namespace}/{self.name}",
                "workload": spec.processor.name,
                "from": current,
                "to": decision.replicas,
                "reason": decision.reason,
                "inputs": decision.message,
            },
        )
        return True

    def _degrade(self, reason: str, message: str, now: str, generation: int) -> None:
        self.previous = None  # rates restart from the next good read
        self.metrics.degraded_now(self.namespace, self.name, reason)
        tracing.error(tracing.current_span(), reason)
        old = self.conditions.get("Degraded")
        changed = old is None or old.status != "True" or old.reason != reason
        self.conditions.set("Degraded", True, reason, message, now, generation)
        if changed:
            self.event("Warning", reason, f"{message}; not scaling")
            log.warning(
                "degraded; not scaling",
                extra={"pipeline": f"{self.namespace}/{self.name}", "reason": reason, "detail": message},
            )

    async def _write_status(self, status: dict[str, Any], now: str, generation: int) -> None:
        if self.conditions.get("StreamReady") is None:
            self.conditions.set("StreamReady", False, "Reconciling", "not reconciled yet", now, generation)
        if self.conditions.get("Degraded") is None:
            self.conditions.set("Degraded", False, "LagFresh", "", now, generation)
        self.conditions.derive_ready(now, generation)
        body: dict[str, Any] = {**status, "conditions": self.conditions.to_list()}
        if self.reconciled_generation is not None:
            body["observedGeneration"] = self.reconciled_generation
        if self.last_decision is not None:
            body["lastDecision"] = self.last_decision
        try:
            await self.kube.merge_patch(
                pipeline_path(self.namespace, self.name) + "/status", {"status": body}
            )
        except KubeError as exc:
            log.warning(
                "status not written", extra={"pipeline": f"{self.namespace}/{self.name}", "error": str(exc)}
            )
