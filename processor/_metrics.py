"""The processor's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from medevents.metrics import LATENCY_BUCKETS, new_registry

# Event latencies reach minutes under backlog; handler times are seconds.
E2E_BUCKETS = (*LATENCY_BUCKETS, 120, 300, 600, 1800)
BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 200, 500, 1000)


class ProcessorMetrics:
    """Every metric of one processor process, in its own registry."""

    def __init__(self) -> None:
        self.registry: CollectorRegistry = new_registry()
        self.applied_count = 0  # plain count of applied events, for the rate in the member record
        r = self.registry
        self.in_flight = Gauge(
            "medevents_processor_in_flight", "Events held (queued in a lane or running)", registry=r
        )
        self.running = Gauge("medevents_processor_running", "Handler executions in progress", registry=r)
        self.lanes = Gauge(
            "medevents_processor_lanes", "Patient lanes (patients with held events)", registry=r
        )
        self.capacity = Gauge("medevents_processor_capacity", "Events this pod may hold at once", registry=r)
        self.partitions_owned = Gauge(
            "medevents_processor_partitions_owned", "Partitions this pod is pulling", registry=r
        )
        self.members = Gauge("medevents_processor_members", "Live processor members seen", registry=r)
        self.processing_seconds = Histogram(
            "medevents_processor_processing_seconds", "Handler run time", buckets=LATENCY_BUCKETS, registry=r
        )
        self.end_to_end_seconds = Histogram(
            "medevents_processor_end_to_end_seconds",
            "From acceptance into the stream to stored in MongoDB",
            buckets=E2E_BUCKETS,
            registry=r,
        )
        self.delivered = Counter(
            "medevents_processor_delivered", "Messages received from JetStream", registry=r
        )
        self.applied = Counter(
            "medevents_processor_applied", "Events stored and applied (success)", registry=r
        )
        self.failed = Counter(
            "medevents_processor_failed", "Events stored as failed and dead-lettered", registry=r
        )
        self.duplicates = Counter(
            "medevents_processor_duplicates",
            "Deliveries of events already applied, or event ids already stored",
            registry=r,
        )
        self.fenced = Counter(
            "medevents_processor_fenced",
            "Times the fence held an event back (wait: an earlier event is pending; gone: stale "
            "watermark; lost: another writer moved the watermark)",
            ["reason"],
            registry=r,
        )
        self.abandoned = Counter(
            "medevents_processor_abandoned",
            "Events given up unwritten because their heartbeats lapsed (another pod takes them)",
            registry=r,
        )
        self.retries = Counter(
            "medevents_processor_retries", "Handler retries after an error, by kind", ["kind"], registry=r
        )
        self.transient_errors = Counter(
            "medevents_processor_transient_errors",
            "Infrastructure errors retried, by kind",
            ["kind"],
            registry=r,
        )
        self.released = Counter(
            "medevents_processor_released", "Held events handed back (NAK) on shutdown", registry=r
        )
        self.write_batch_size = Histogram(
            "medevents_processor_write_batch_size",
            "Events per batched MongoDB write",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.stall_fetches = Counter(
            "medevents_processor_stall_fetches",
            "Pulls beyond the concurrency limit while full and stalled (waiting events only)",
            registry=r,
        )
        self.heartbeats = Counter(
            "medevents_processor_heartbeats", "in_progress heartbeats sent for held events", registry=r
        )
        self.oldest_lane_seconds = Gauge(
            "medevents_processor_oldest_lane_seconds",
            "Longest time a patient lane has gone without finishing an event (its next event waiting "
            "at the fence, retrying or running): a blocked patient",
            registry=r,
        )
        self.consumer_mismatch = Gauge(
            "medevents_processor_consumer_mismatch",
            "1 when a partition consumer's configuration differs from this pod's",
            ["partition"],
            registry=r,
        )
