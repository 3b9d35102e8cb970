"""The processor's pure and in-memory parts: lanes, capacity, consumer comparison, documents,
handler loading, heartbeat timing."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nats.aio.msg import Msg
from nats.js import api

from medevents import topology
from medevents.config import ProcessorSettings, SettingsError, load
from medevents.model import decode_event
from medevents.processor.consumers import consumer_mismatches
from medevents.processor.documents import processed_document
from medevents.processor.handlers import HandlerResult, load_handler
from medevents.processor.lanes import Capacity, HeldEvent, LaneStep, PatientLanes
from medevents.processor.service import heartbeat_timing


def held(token: str, seq: int) -> HeldEvent:
    return HeldEvent(cast(Msg, None), seq, f"events.0.{token}", token, 0, 1, 0.0)


async def test_a_lane_runs_its_events_by_sequence_one_at_a_time() -> None:
    order: list[tuple[str, int]] = []
    running: set[str] = set()
    overlap = False

    async def step(h: HeldEvent) -> LaneStep:
        nonlocal overlap
        overlap |= h.token in running
        running.add(h.token)
        await asyncio.sleep(0.001)
        running.discard(h.token)
        order.append((h.token, h.sequence))
        return LaneStep.DONE

    capacity = Capacity(100)
    lanes = PatientLanes(step, capacity)
    for token, seq in [("a", 5), ("a", 3), ("b", 4), ("a", 9), ("b", 1)]:
        capacity.used += 1
        assert lanes.admit(held(token, seq))
    assert await lanes.wait_empty(5)
    assert [s for t, s in order if t == "a"] == [3, 5, 9]
    assert [s for t, s in order if t == "b"] == [1, 4]
    assert not overlap and capacity.used == 0 and lanes.held == 0


async def test_a_waiting_head_lets_an_earlier_redelivery_through_first() -> None:
    seen: list[int] = []

    async def step(h: HeldEvent) -> LaneStep:
        seen.append(h.sequence)
        # Sequence 2 is not its turn until 1 has been done.
        return LaneStep.DONE if h.sequence == 1 or 1 in [s for s in seen[:-1]] else LaneStep.WAIT

    capacity = Capacity(10)
    lanes = PatientLanes(step, capacity, wait_initial_s=0.5)
    capacity.used += 2
    lanes.admit(held("p", 2))
    await asyncio.sleep(0.01)
    lanes.admit(held("p", 1))  # wakes the waiting lane at once, not after its back-off
    assert await lanes.wait_empty(0.3)
    assert seen[:2] == [2, 1] and seen[-1] == 2


async def test_a_redelivery_of_a_held_event_is_not_queued_twice() -> None:
    gate = asyncio.Event()

    async def step(h: HeldEvent) -> LaneStep:
        await gate.wait()
        return LaneStep.DONE

    capacity = Capacity(10)
    lanes = PatientLanes(step, capacity)
    capacity.used += 2
    assert lanes.admit(held("p", 1))
    assert not lanes.admit(held("p", 1))
    assert lanes.held == 1
    gate.set()
    assert await lanes.wait_empty(1)


async def test_the_longest_stuck_lane_is_the_one_without_progress() -> None:
    release = asyncio.Event()

    async def step(h: HeldEvent) -> LaneStep:
        if h.sequence == 1 and not release.is_set():  # the "stuck" patient's event
            return LaneStep.WAIT
        return LaneStep.DONE

    capacity = Capacity(10)
    lanes = PatientLanes(step, capacity, wait_initial_s=0.01, wait_max_s=0.01)
    assert lanes.longest_stuck() == 0.0
    capacity.used += 2
    lanes.admit(held("stuck", 1))
    await asyncio.sleep(0.2)
    lanes.admit(held("flowing", 2))  # a fresh lane that finishes at once does not hide the stuck one
    await asyncio.sleep(0.05)
    assert lanes.longest_stuck() >= 0.2
    release.set()
    assert await lanes.wait_empty(1)
    assert lanes.longest_stuck() == 0.0


async def test_capacity_blocks_when_full_and_resumes_when_freed() -> None:
    capacity = Capacity(3)
    assert await capacity.reserve(10) == 3
    waiter = asyncio.create_task(capacity.reserve(10))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    capacity.give_back(2)
    assert await asyncio.wait_for(waiter, 1) == 2


def _consumer(**changes: Any) -> api.ConsumerConfig:
    config = topology.consumer_config(3, ack_wait_s=30, max_ack_pending=512)
    for key, value in changes.items():
        setattr(config, key, value)
    return config


def test_consumer_comparison_reports_only_real_differences() -> None:
    assert consumer_mismatches(_consumer(), _consumer(max_deliver=0)) == []  # both unlimited
    fields = [
        f for f, _ in consumer_mismatches(_consumer(), _consumer(ack_wait=10.0, ack_policy=api.AckPolicy.ALL))
    ]
    assert fields == ["ack_policy", "ack_wait"]


@given(st.floats(1, 3600))
def test_heartbeats_beat_well_before_abandoning(ack_wait: float) -> None:
    interval, abandon = heartbeat_timing(ack_wait)
    assert 2 * interval < abandon < ack_wait


def test_the_document_has_the_old_demo_shape_plus_stream_facts() -> None:
    event = decode_event(
        b'{"patientId":"p-1","type":"vitals","data":{"hr":72},"ts":"2025-10-01T10:30:00+02:00"}'
    )
    start = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    doc = processed_document(
        event,
        event_id="e1",
        patient_id="p-1",
        sequence=7,
        partition=2,
        attempts=1,
        started=start,
        finished=start + dt.timedelta(milliseconds=5234),
        result=HandlerResult(),
        member="m",
    )
    assert doc["processingDurationMs"] == 5234
    assert doc["result"] == {"status": "success", "message": "Event processed successfully"}
    assert {"eventId", "patientId", "type", "data", "ts", "processedAt", "createdAt", "updatedAt"} <= set(doc)
    assert (doc["sequence"], doc["partition"], doc["attempts"]) == (7, 2, 1)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("medevents.nope:fn", "cannot import"),
        ("medevents.processor.handlers:nope", "has no"),
        ("medevents.processor.handlers:as_result", "not an async function"),
    ],
)
def test_a_bad_handler_names_the_variable(spec: str, expected: str) -> None:
    with pytest.raises(SettingsError, match=f"PROCESSOR_HANDLER: .*{expected}"):
        load_handler(spec)


def test_processor_settings_fail_naming_the_variable() -> None:
    with pytest.raises(SettingsError, match="PROCESSOR_RETRY_INITIAL_MS"):
        load(ProcessorSettings, {"PROCESSOR_RETRY_INITIAL_MS": "5000", "PROCESSOR_RETRY_MAX_MS": "10"})
    with pytest.raises(SettingsError, match="PROCESSOR_MAX_ACK_PENDING"):
        load(ProcessorSettings, {"PROCESSOR_MAX_ACK_PENDING": "0"})
