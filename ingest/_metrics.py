"""The ingest service's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from medevents.metrics import LATENCY_BUCKETS, new_registry


class IngestMetrics:
    def __init__(self) -> None:
        self.registry: CollectorRegistry = new_registry()
        r = self.registry
        self.requests = Counter(
            "medevents_ingest_requests", "HTTP requests by route and status", ["route", "status"], registry=r
        )
        self.accepted = Counter("medevents_ingest_events_accepted", "Events durably in JetStream", registry=r)
        self.duplicates = Counter(
            "medevents_ingest_duplicates", "Events JetStream already had (same event id)", registry=r
        )
        self.errors = Counter(
            "medevents_ingest_errors", "Rejected or failed events by kind", ["kind"], registry=r
        )
        self.publish_seconds = Histogram(
            "medevents_ingest_publish_seconds",
            "Publish to PubAck latency",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.publish_batch = Histogram(
            "medevents_ingest_publish_batch_events",
            "Events sent to JetStream together (one atomic batch, or 1 for a single publish)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )
        self.nats_connected = Gauge("medevents_ingest_nats_connected", "1 when connected to NATS", registry=r)
        self.nats_connected.set(1)
        self.nats_sync_always = Gauge(
            "medevents_nats_sync_always",
            "1 when every NATS server fsyncs before it acknowledges, 0 when one does not, -1 unknown",
            registry=r,
        )
        self.nats_sync_always.set(-1)
