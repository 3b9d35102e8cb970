"""Reconciling stream EVENTS, its partition consumers and the tuning KV with an EventPipeline spec.

What can change live is changed (stream replicas, duplicate window, max age; the consumers' ack
wait and max ack pending; processor tuning). The partition count cannot: changing it moves almost
every patient to another partition, a migration rather than an edit, so a spec that differs from
the existing stream is refused and the stream keeps its count.
"""

from __future__ import annotations

import logging

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError, NotFoundError

from medevents import topology
from medevents.cluster import Tuning, decode_tuning, encode
from medevents.natsconn import stream_mismatches

from .spec import EventPipelineSpec, stream_settings, tuning

__all__ = ["Reconciled", "publish_tuning", "reconcile_topology"]

log = logging.getLogger("medevents.operator")

_LIVE_STREAM_FIELDS = ("num_replicas", "duplicate_window", "max_age")


class Reconciled(msgspec.Struct, frozen=True):
    """What reconciling did."""

    partitions: int  # the stream's partition count (the source of truth)
    created_stream: bool = False
    stream_changes: tuple[str, ...] = ()  # live changes applied to the stream
    created_consumers: tuple[str, ...] = ()
    updated_consumers: tuple[str, ...] = ()
    refused: str = ""  # why a requested change was not applied (a partition change)


async def reconcile_topology(js: JetStreamContext, spec: EventPipelineSpec) -> Reconciled:
    """Create what is missing, update what may change live, refuse a partition change."""
    want = topology.stream_config(stream_settings(spec))
    assert want.name is not None
    created, changes, refused = False, [], ""
    try:
        have = (await js.stream_info(want.name)).config
    except NotFoundError:
        have = (await js.add_stream(want)).config
        created = True
        log.info("stream created", extra={"stream": want.name, "partitions": spec.stream.partitions})
    partitions = topology.partitions_of(have) or spec.stream.partitions
    if partitions != spec.stream.partitions:
        refused = (
            f"spec.stream.partitions is {spec.stream.partitions} but stream {want.name} has {partitions}: "
            "changing the partition count remaps almost every patient, so it is a migration, not a "
            f"live edit; the stream keeps {partitions} partitions"
        )
    if not created:
        live = {f: getattr(want, f) for f in _LIVE_STREAM_FIELDS if getattr(want, f) != getattr(have, f)}
        if live:
            await js.update_stream(have.evolve(**live))
            changes = [f"{f}: {getattr(have, f)!r} -> {v!r}" for f, v in live.items()]
            log.info("stream updated", extra={"stream": want.name, "changes": changes})
        rest = [
            m
            for m in stream_mismatches(want, have)
            if m.split(":")[0] not in (*_LIVE_STREAM_FIELDS, "partitions")
        ]
        for mismatch in rest:
            log.warning("stream differs from the spec; not changed", extra={"diff": mismatch})
    await _ensure_dlq(js, spec)
    made, updated = await _ensure_consumers(js, spec, partitions)
    return Reconciled(partitions, created, tuple(changes), made, updated, refused)


async def _ensure_dlq(js: JetStreamContext, spec: EventPipelineSpec) -> None:
    want = topology.dlq_stream_config(stream_settings(spec))
    assert want.name is not None
    try:
        await js.stream_info(want.name)
    except NotFoundError:
        await js.add_stream(want)


async def _ensure_consumers(
    js: JetStreamContext, spec: EventPipelineSpec, partitions: int
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    made, updated = [], []
    for p in range(partitions):
        want = topology.consumer_config(
            p, ack_wait_s=spec.processing.ack_wait_seconds, max_ack_pending=spec.processing.max_ack_pending
        )
        name = topology.consumer_name(p)
        try:
            have = (await js.consumer_info(topology.STREAM, name)).config
        except NotFoundError:
            await js.add_consumer(topology.STREAM, want)
            made.append(name)
            continue
        if have.ack_wait != want.ack_wait or have.max_ack_pending != want.max_ack_pending:
            # ack_wait and max_ack_pending are editable on a live consumer; the rest is fixed.
            await js.add_consumer(
                topology.STREAM, have.evolve(ack_wait=want.ack_wait, max_ack_pending=want.max_ack_pending)
            )
            updated.append(name)
    if made:
        log.info("partition consumers created", extra={"consumers": made})
    if updated:
        log.info("partition consumers updated", extra={"consumers": updated})
    return tuple(made), tuple(updated)


async def publish_tuning(
    js: JetStreamContext, spec: EventPipelineSpec, generation: int, replicas: int
) -> bool:
    """Put the spec's tuning to KV ``medevents_tuning/processor`` if it differs; True if written."""
    try:
        kv = await js.key_value(topology.TUNING_BUCKET)
    except BucketNotFoundError:
        kv = await js.create_key_value(topology.tuning_bucket_config(replicas))
    want: Tuning = tuning(spec, generation)
    try:
        entry = await kv.get(topology.TUNING_KEY)
        have = decode_tuning(entry.value) if entry.value else None
    except NotFoundError:
        have = None
    except msgspec.DecodeError:
        have = None
    if have is not None and msgspec.structs.replace(have, generation=generation) == want:
        return False
    await kv.put(topology.TUNING_KEY, encode(want))
    log.info("tuning published", extra={"generation": generation})
    return True
