"""The operator's Prometheus metrics: what each EventPipeline's poll saw and decided, served on
``OPERATOR_METRICS_PORT``. The lag, rates and replicas are the ones the status shows; alert rules
and the dashboard read them (charts/medevents/files/)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge

from medevents.backlog import Backlog, Rates
from medevents.metrics import new_registry

__all__ = ["PipelineMetrics"]

_LABELS = ["pipeline_namespace", "pipeline"]  # not `namespace`: scrapes add the pod's own


class PipelineMetrics:
    """Gauges per EventPipeline, labelled with its namespace and name."""

    def __init__(self) -> None:
        self.registry: CollectorRegistry = new_registry()
        r = self.registry
        self.lag = Gauge(
            "medevents_pipeline_lag",
            "Events not yet processed: pending plus unacknowledged over the partition consumers",
            _LABELS,
            registry=r,
        )
        self.arrival_rate = Gauge(
            "medevents_pipeline_arrival_rate", "Events/s stored since the previous poll", _LABELS, registry=r
        )
        self.processing_rate = Gauge(
            "medevents_pipeline_processing_rate", "Events/s processed since the previous poll", _LABELS,
            registry=r,
        )  # fmt: skip
        self.replicas = Gauge("medevents_pipeline_replicas", "Processor replicas now", _LABELS, registry=r)
        self.desired_replicas = Gauge(
            "medevents_pipeline_desired_replicas", "Processor replicas the scale policy asks for", _LABELS,
            registry=r,
        )  # fmt: skip
        self.max_replicas = Gauge(
            "medevents_pipeline_max_replicas", "spec.scaling.maxReplicas, capped by the partitions", _LABELS,
            registry=r,
        )  # fmt: skip
        self.target_drain_seconds = Gauge(
            "medevents_pipeline_target_drain_seconds",
            "spec.scaling.targetDrainSeconds: the backlog should drain within this",
            _LABELS,
            registry=r,
        )
        self.degraded = Gauge(
            "medevents_pipeline_degraded",
            "1 while the Degraded condition is True (no trustworthy lag, not scaling), with its reason",
            [*_LABELS, "reason"],
            registry=r,
        )
        self._reasons: dict[tuple[str, str], str] = {}

    def observed(
        self,
        namespace: str,
        name: str,
        *,
        backlog: Backlog,
        rates: Rates,
        replicas: int,
        desired: int,
        max_replicas: int,
        target_drain_s: float,
    ) -> None:
        """A successful poll: its numbers, and Degraded cleared."""
        labels = (namespace, name)
        self.lag.labels(*labels).set(backlog.lag)
        self.arrival_rate.labels(*labels).set(rates.arrival)
        self.processing_rate.labels(*labels).set(rates.processing)
        self.replicas.labels(*labels).set(replicas)
        self.desired_replicas.labels(*labels).set(desired)
        self.max_replicas.labels(*labels).set(max_replicas)
        self.target_drain_seconds.labels(*labels).set(target_drain_s)
        self._degraded(labels, "", 0)

    def degraded_now(self, namespace: str, name: str, reason: str) -> None:
        """A poll without trustworthy lag; the other numbers keep their last values."""
        self._degraded((namespace, name), reason, 1)

    def _degraded(self, labels: tuple[str, str], reason: str, value: int) -> None:
        previous = self._reasons.get(labels)
        if previous is not None and previous != reason:
            self.degraded.remove(*labels, previous)
        self._reasons[labels] = reason
        self.degraded.labels(*labels, reason).set(value)

    def forget(self, namespace: str, name: str) -> None:
        """The pipeline is gone (or another operator replica took over): drop its series."""
        labels = (namespace, name)
        for gauge in (
            self.lag,
            self.arrival_rate,
            self.processing_rate,
            self.replicas,
            self.desired_replicas,
            self.max_replicas,
            self.target_drain_seconds,
        ):
            gauge.remove(*labels)  # a no-op when absent
        reason = self._reasons.pop(labels, None)
        if reason is not None:
            self.degraded.remove(*labels, reason)
