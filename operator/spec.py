"""The EventPipeline spec as typed data, and what it means for the stream, the policy and the pods.

The CRD (charts/medevents/crds/eventpipelines.medevents.io.yaml) applies defaults and ranges on the
API server; these Structs repeat the defaults (a test checks they agree), so an object the API
server never defaulted (an old object, a test) reads the same.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from medevents.cluster import Tuning
from medevents.config import StreamSettings
from medevents.scaling import ScaleSpec

__all__ = [
    "EventPipelineSpec",
    "NatsRef",
    "ProcessingSpec",
    "ScalingSpec",
    "SpecError",
    "StreamSpec",
    "WorkloadRef",
    "parse_spec",
    "scale_spec",
    "stream_settings",
    "tuning",
]


class SpecError(ValueError):
    """The spec cannot be used; the message names the field."""


class _Spec(msgspec.Struct, frozen=True, rename="camel", forbid_unknown_fields=True):
    pass


class TlsRef(_Spec, frozen=True):
    enabled: bool = False  # connect with TLS
    secret: str = ""  # Secret with ca.crt (+ tls.crt, tls.key)


class NatsRef(_Spec, frozen=True):
    url: str = "nats://nats:4222"  # server URL(s), comma separated
    credentials_secret: str = ""  # Secret with user + password, token or creds
    tls: TlsRef = msgspec.field(default_factory=TlsRef)
    monitor_url: str = ""  # monitoring URL(s), one per server: checked for fsync-before-ack


class StreamSpec(_Spec, frozen=True):
    partitions: int = 16  # patient shards, fixed at creation
    replicas: int = 1  # stream replicas
    duplicate_window_seconds: float = 120.0  # seconds an event id is remembered
    max_age_seconds: float = 0.0  # seconds an unprocessed event is kept, 0 = until processed


class WorkloadRef(_Spec, frozen=True):
    name: str  # Deployment or StatefulSet name in the pipeline's namespace
    kind: Literal["Deployment", "StatefulSet"] = "Deployment"

    @property
    def plural(self) -> str:
        return "deployments" if self.kind == "Deployment" else "statefulsets"


class ScalingSpec(_Spec, frozen=True):
    min_replicas: int = 1
    max_replicas: int = 10
    target_drain_seconds: float = 60.0
    poll_interval_seconds: float = 2.0
    scale_up_stabilization_seconds: float = 0.0
    scale_down_stabilization_seconds: float = 60.0
    max_scale_down_step: int = 2
    idle_seconds: float = 300.0


class ProcessingSpec(_Spec, frozen=True):
    concurrency: int = 5000
    ack_wait_seconds: float = 30.0
    max_ack_pending: int = 5000
    max_attempts: int = 5
    delay_min_ms: int = 5000
    delay_max_ms: int = 6000


class EventPipelineSpec(_Spec, frozen=True):
    processor: WorkloadRef
    nats: NatsRef = msgspec.field(default_factory=NatsRef)
    stream: StreamSpec = msgspec.field(default_factory=StreamSpec)
    scaling: ScalingSpec = msgspec.field(default_factory=ScalingSpec)
    processing: ProcessingSpec = msgspec.field(default_factory=ProcessingSpec)


def parse_spec(raw: Any) -> EventPipelineSpec:
    """The spec of an EventPipeline object; :class:`SpecError` names the bad field."""
    try:
        spec = msgspec.convert(raw, EventPipelineSpec)
    except msgspec.ValidationError as exc:
        raise SpecError(f"spec: {exc}") from None
    if spec.scaling.min_replicas > spec.scaling.max_replicas:
        raise SpecError("spec.scaling.minReplicas must not exceed spec.scaling.maxReplicas")
    if spec.processing.delay_min_ms > spec.processing.delay_max_ms:
        raise SpecError("spec.processing.delayMinMs must not exceed spec.processing.delayMaxMs")
    return spec


def stream_settings(spec: EventPipelineSpec) -> StreamSettings:
    """Stream EVENTS as this spec wants it."""
    return StreamSettings(
        partitions=spec.stream.partitions,
        replicas=spec.stream.replicas,
        duplicate_window_s=spec.stream.duplicate_window_seconds,
        max_age_s=spec.stream.max_age_seconds,
    )


def scale_spec(spec: EventPipelineSpec, partitions: int) -> ScaleSpec:
    """The policy's settings; ``partitions`` is the existing stream's count (the source of truth)."""
    s, p = spec.scaling, spec.processing
    return ScaleSpec(
        min_replicas=s.min_replicas,
        max_replicas=s.max_replicas,
        partitions=partitions,
        target_drain_s=s.target_drain_seconds,
        scale_up_window_s=s.scale_up_stabilization_seconds,
        scale_down_window_s=s.scale_down_stabilization_seconds,
        max_scale_down_step=s.max_scale_down_step,
        idle_s=s.idle_seconds,
        concurrency=p.concurrency,
        delay_s=(p.delay_min_ms + p.delay_max_ms) / 2000,
    )


def tuning(spec: EventPipelineSpec, generation: int) -> Tuning:
    """What processors apply live (published to KV ``medevents_tuning/processor``)."""
    p = spec.processing
    return Tuning(
        concurrency=p.concurrency,
        delay_min_ms=p.delay_min_ms,
        delay_max_ms=p.delay_max_ms,
        ack_wait_s=p.ack_wait_seconds,
        max_attempts=p.max_attempts,
        generation=generation,
    )
