"""JetStream topology as plain data: the one place that names streams, consumers and KV buckets.

Ingest, processor, operator and the local runner all build their JetStream objects from here.
"""

from __future__ import annotations

import re

from nats.js import api

from medevents.config import StreamSettings
from medevents.subjects import INGEST_PREFIX, partition_filter

__all__ = [
    "DLQ_STREAM",
    "DLQ_SUBJECT_PREFIX",
    "MEMBERS_BUCKET",
    "STREAM",
    "TUNING_BUCKET",
    "TUNING_KEY",
    "consumer_config",
    "consumer_name",
    "dlq_stream_config",
    "members_bucket_config",
    "partitions_of",
    "stream_config",
    "tuning_bucket_config",
]

STREAM = "EVENTS"
DLQ_STREAM = "EVENTS_DLQ"
DLQ_SUBJECT_PREFIX = "deadletter"
MEMBERS_BUCKET = "medevents_members"  # processor pods, one key each, expiring with the TTL
TUNING_BUCKET = "medevents_tuning"  # live tuning the operator publishes and processors watch
TUNING_KEY = "processor"

_TRANSFORM = re.compile(r"\{\{\s*partition\(\s*(\d+)\s*,\s*1\s*\)\s*\}\}")


def stream_config(settings: StreamSettings) -> api.StreamConfig:
    """Stream `EVENTS`: ``events.<token>`` stored as ``events.<partition>.<token>``.

    Work-queue retention keeps an event until its partition consumer acknowledges it (after it is
    in MongoDB), never dropping one nobody has consumed yet; ``discard: new`` makes a full stream
    refuse new events (ingest answers 503) instead of deleting old ones. ``allow_atomic`` lets
    ingest send the events that arrive together as one atomic batch: one fsync for all of them
    (ingest/publisher.py; nats-server 2.12+, older servers ignore it and get single publishes).
    """
    return api.StreamConfig(
        name=STREAM,
        description="medevents: accepted medical events, one subject per patient",
        subjects=[f"{INGEST_PREFIX}.*"],
        subject_transform=api.SubjectTransform(
            src=f"{INGEST_PREFIX}.*",
            dest=f"{INGEST_PREFIX}.{{{{partition({settings.partitions},1)}}}}.{{{{wildcard(1)}}}}",
        ),
        retention=api.RetentionPolicy.WORK_QUEUE,
        storage=api.StorageType.FILE,
        discard=api.DiscardPolicy.NEW,
        num_replicas=settings.replicas,
        duplicate_window=settings.duplicate_window_s,
        max_age=settings.max_age_s,
        max_bytes=settings.max_bytes,
        allow_atomic=True,
    )


def partitions_of(config: api.StreamConfig) -> int | None:
    """The partition count an existing stream was created with (the source of truth)."""
    if config.subject_transform is None or config.subject_transform.dest is None:
        return None
    match = _TRANSFORM.search(config.subject_transform.dest)
    return int(match.group(1)) if match else None


def consumer_name(partition: int) -> str:
    return f"processor-{partition}"


def consumer_config(partition: int, *, ack_wait_s: float, max_ack_pending: int) -> api.ConsumerConfig:
    """The durable pull consumer of one partition.

    ``max_deliver=-1``: the server's give-up would move the ack floor past a message and break
    per-patient order; giving up (dead-lettering) is the processor's decision.
    """
    return api.ConsumerConfig(
        durable_name=consumer_name(partition),
        name=consumer_name(partition),
        description=f"medevents processors, partition {partition}",
        filter_subject=partition_filter(partition),
        deliver_policy=api.DeliverPolicy.ALL,
        ack_policy=api.AckPolicy.EXPLICIT,
        ack_wait=ack_wait_s,
        max_deliver=-1,
        max_ack_pending=max_ack_pending,
        replay_policy=api.ReplayPolicy.INSTANT,
    )


def dlq_stream_config(settings: StreamSettings) -> api.StreamConfig:
    """Dead letters, ``deadletter.<token>``: kept until deleted by hand, for inspection and replay."""
    return api.StreamConfig(
        name=DLQ_STREAM,
        description="medevents: events whose processing failed permanently",
        subjects=[f"{DLQ_SUBJECT_PREFIX}.*"],
        retention=api.RetentionPolicy.LIMITS,
        storage=api.StorageType.FILE,
        discard=api.DiscardPolicy.OLD,
        num_replicas=settings.replicas,
        duplicate_window=settings.duplicate_window_s,
        max_age=0,
        max_bytes=-1,
    )


def members_bucket_config(ttl_s: float, replicas: int) -> api.KeyValueConfig:
    return api.KeyValueConfig(
        bucket=MEMBERS_BUCKET,
        description="medevents processor membership (heartbeats)",
        ttl=ttl_s,
        history=1,
        replicas=replicas,
        storage=api.StorageType.FILE,
    )


def tuning_bucket_config(replicas: int) -> api.KeyValueConfig:
    return api.KeyValueConfig(
        bucket=TUNING_BUCKET,
        description="medevents live tuning published by the operator",
        history=5,
        replicas=replicas,
        storage=api.StorageType.FILE,
    )
